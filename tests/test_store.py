"""Dumps round-trip exactly, are written whole or not at all, and hold data only."""

import h5py
import numpy as np
import pytest

from layerdiff import DumpError, modelfile, runner, store

from conftest import FIXTURES


def test_dump_round_trips_every_value(tmp_path):
    trace = runner.run_one(modelfile.load(FIXTURES / "cnn_numpy.py"))
    store.write(trace, tmp_path / "c.h5")
    with store.Dump(tmp_path / "c.h5") as dump:
        back = dump.trace()
    assert [l.name for l in back.layers] == [l.name for l in trace.layers]
    for got, want in zip(back.layers, trace.layers):
        assert got.tensors.keys() == want.tensors.keys()
        for k in want.tensors:
            assert np.array_equal(got.tensors[k], want.tensors[k])
    for got, want in zip(back.params, trace.params):
        assert (got.name, got.layout) == (want.name, want.layout)
        assert np.array_equal(got.value, want.value) and np.array_equal(got.grad, want.grad)
    assert back.loss == trace.loss
    assert back.info.weights_sha256 == trace.info.weights_sha256
    assert np.array_equal(back.inputs[0], trace.inputs[0]) and np.array_equal(back.targets, trace.targets)


def test_dump_holds_no_pickled_objects(tmp_path):
    store.write(runner.run_one(modelfile.load(FIXTURES / "mlp_numpy.py")), tmp_path / "m.h5")
    kinds = []
    with h5py.File(tmp_path / "m.h5") as f:
        f.visititems(lambda name, obj: kinds.append(obj.dtype.kind) if isinstance(obj, h5py.Dataset) else None)
    assert kinds and set(kinds) <= {"f", "i", "u", "b"}


def test_a_failed_write_leaves_no_file(tmp_path):
    trace = runner.run_one(modelfile.load(FIXTURES / "mlp_numpy.py"))
    trace.layers[2].tensors["output"] = np.array([object()], dtype=object)  # h5py refuses objects
    with pytest.raises(TypeError):
        store.write(trace, tmp_path / "m.h5")
    assert list(tmp_path.iterdir()) == []


def test_existing_dump_is_not_overwritten(tmp_path):
    trace = runner.run_one(modelfile.load(FIXTURES / "mlp_numpy.py"))
    store.write(trace, tmp_path / "m.h5")
    with pytest.raises(DumpError, match=r"m.h5 exists. Pass force=True"):
        store.write(trace, tmp_path / "m.h5")


def test_weights_hash_is_the_same_across_frameworks_and_layouts():
    # The CNN pair: transposed dense weights, and nnfs's (1, 10) bias against PyTorch's (10,).
    numpy_side = runner.run_one(modelfile.load(FIXTURES / "cnn_numpy.py"))
    pair = runner.run_pair(modelfile.load(FIXTURES / "cnn_numpy.py"), modelfile.load(FIXTURES / "cnn_torch.py"))
    assert pair.a.info.weights_sha256 == pair.b.info.weights_sha256 == numpy_side.info.weights_sha256
    torch_own = runner.run_one(modelfile.load(FIXTURES / "cnn_torch.py"))
    assert torch_own.info.weights_sha256 != numpy_side.info.weights_sha256  # its own init: other weights
