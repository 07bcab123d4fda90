"""``run`` writes each side's dump as that side's first run ends and checks the second run against the dump, so
that no two whole runs are held in memory at once; what it writes is what writing at the end wrote."""

import h5py
import numpy as np
import pytest

import layerdiff
from layerdiff import runner, store

from conftest import FIXTURES, one_error_line

MLP, MLP_TORCH = FIXTURES / "mlp_numpy.py", FIXTURES / "mlp_torch.py"


def test_each_first_run_is_on_disk_before_the_next_run_starts(tmp_path, monkeypatch):
    out = tmp_path / "out"
    paths = [out / "mlp_numpy.h5", out / "mlp_torch.h5"]
    on_disk = []
    run = runner.Side.run

    def spying(side, feed, forcing=None):
        on_disk.append([p.exists() for p in paths])
        return run(side, feed, forcing)

    monkeypatch.setattr(runner.Side, "run", spying)
    assert layerdiff.run(MLP, MLP_TORCH, out=out).match
    # A's two runs, then B's two, then the replay of B: A's dump exists from A's second run on, B's from B's.
    assert on_disk[:5] == [[False, False], [True, False], [True, False], [True, True], [True, True]]


def test_the_dumps_say_the_second_runs_noise_and_hold_every_value(tmp_path):
    layerdiff.run(MLP, MLP_TORCH, out=tmp_path / "spilled")
    layerdiff.run(MLP, MLP_TORCH, out=tmp_path / "stats", stats_only=True)  # written whole at the end, as before
    for name in ("mlp_numpy.h5", "mlp_torch.h5"):
        with store.Dump(tmp_path / "spilled" / name) as spilled:
            assert spilled.info.run_to_run == 0.0  # measured after the dump was written, and recorded in it
            assert all(np.isfinite(spilled.tensor(i, k)).all() for i, layer in enumerate(spilled.layers) for k in layer.tensors)
            assert all(spilled.param(n).value.size and spilled.param_grad(n) is not None for n in spilled.param_names())
        with h5py.File(tmp_path / "spilled" / name) as f, h5py.File(tmp_path / "stats" / name) as g:
            assert sorted(f["layers"]) == sorted(g["layers"]) and sorted(f["params"]) == sorted(g["params"])


def test_once_writes_the_dumps_without_a_second_run(tmp_path):
    layerdiff.run(MLP, MLP_TORCH, out=tmp_path, once=True)
    with store.Dump(tmp_path / "mlp_numpy.h5") as d:
        assert d.info.run_to_run is None


def test_randomness_found_after_a_dump_was_written_leaves_no_dump(tmp_path):
    with pytest.raises(layerdiff.ModelFileError, match="dropout_numpy.py is not deterministic: layer 'drop1'"):
        layerdiff.run(FIXTURES / "dropout_numpy.py", MLP_TORCH, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_running_out_of_memory_is_one_line_that_says_what_to_do(cli, tmp_path, monkeypatch):
    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(runner, "weight_links", exhausted)  # in layerdiff's own code
    code, _, err = cli("run", MLP, MLP_TORCH, "-o", "out")
    assert code == 2 and "Traceback" not in err
    assert one_error_line(err).startswith("error: layerdiff ran out of memory (MemoryError): ")
    assert "--layers GLOB, --stats-only, --once" in one_error_line(err) and not (tmp_path / "out").exists()


def test_running_out_of_memory_in_the_models_code_is_not_blamed_on_it(cli, tmp_path):
    (tmp_path / "big.py").write_text(
        "import numpy as np\nclass Big:\n    def forward(self, x): raise MemoryError()\n    def backward(self, d): return d\n"
        "model = [Big()]\ninput_shape = (2, 3)\n"
    )
    code, _, err = cli("dump", "big.py", "-o", "big.h5")
    assert code == 2 and "Traceback" not in err
    assert one_error_line(err).startswith("error: big.py ran out of memory in the forward pass of layer")
    assert not (tmp_path / "big.h5").exists()
