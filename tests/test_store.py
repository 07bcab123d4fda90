"""Dumps round-trip exactly, are written whole or not at all, and hold data only."""

import errno
import os

import h5py
import numpy as np
import pytest

from layerdiff import DumpError, modelfile, runner, store
from layerdiff.records import LayerRecord, ParamRecord, Trace
from layerdiff.stats import statistics, summarize

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


def _odd_values_trace():
    """Tensors of every form the writer meets: transposed and strided views, scalars, empty, bool, int, float16."""
    rng = np.random.default_rng(3)
    big = rng.standard_normal((300, 700))
    tensors = {
        "input": big.T,  # a transposed view: written in C order, as h5py would
        "output": big[::3, 1::2],
        "grad_output": rng.standard_normal((5, 4, 3)).astype(np.float16),
        "grad_input": np.array(2.5),
        "output.1": np.zeros((0, 3)),
        "output.2": rng.integers(-9, 9, 17).astype(np.int32),
        "output.3": rng.standard_normal(40) > 0,
    }
    weight = rng.standard_normal((64, 32))
    layer = LayerRecord("odd", "Odd", tensors, ["odd.W"])
    return Trace([layer], [ParamRecord("odd.W", "odd", "out in", weight, weight.T.copy().T)], 1.5,
                 inputs=[rng.standard_normal((8, 3)).T], targets=np.arange(8))


@pytest.mark.parametrize("compression", [None, "lzf"])
def test_the_values_thread_writes_every_form_bit_for_bit_with_its_summaries(tmp_path, compression):
    trace = _odd_values_trace()
    store.write(trace, tmp_path / "o.h5", compression=compression)
    with h5py.File(tmp_path / "o.h5") as f:  # plain h5py reads it
        g = f["layers/0000_odd"]
        for key, want in trace.layers[0].tensors.items():
            got = g[key][()]
            assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), key
            info = summarize(want)
            assert (g[key].attrs["norm"], g[key].attrs["mean"]) == (info.norm, info.mean), key
        assert np.array_equal(f["params/0000_odd.W/grad"][()], trace.params[0].grad)
        assert np.array_equal(f["inputs/0"][()], trace.inputs[0]) and np.array_equal(f["targets"][()], trace.targets)
    with store.Dump(tmp_path / "o.h5") as dump:
        back = dump.trace()
    for key, want in trace.layers[0].tensors.items():
        assert np.array_equal(back.layers[0].tensors[key], want), key


def test_a_stats_only_dump_keeps_what_it_names_and_the_statistics_of_the_rest(tmp_path):
    trace = _odd_values_trace()
    store.write(trace, tmp_path / "s.h5", full=lambda name: False)
    with store.Dump(tmp_path / "s.h5") as dump:
        infos = dump.layers[0].tensors
        for key, want in trace.layers[0].tensors.items():
            assert not infos[key].stored and infos[key].sha256 == statistics(want).sha256, key
    store.fill(trace, tmp_path / "s.h5", full=lambda name: True)
    with store.Dump(tmp_path / "s.h5") as dump:
        for key, want in trace.layers[0].tensors.items():
            assert np.array_equal(dump.tensor(0, key), want), key


def test_a_write_refused_in_the_values_thread_is_a_disk_error_and_leaves_no_file(tmp_path, monkeypatch):
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store.writer.os, "pwrite", full)
    with pytest.raises(DumpError, match="No space left on device"):
        store.write(_odd_values_trace(), tmp_path / "o.h5")
    assert list(tmp_path.iterdir()) == []
