"""The comparison on two cores gives what it gives on one, figure for figure and row for row."""

from dataclasses import asdict

import numpy as np
import pytest

from layerdiff import compare as comparing
from layerdiff import metrics, modelfile, runner, store

from conftest import FIXTURES


def _one_core(monkeypatch):
    monkeypatch.setattr(metrics, "SPLIT", 1 << 60)
    monkeypatch.setattr(comparing, "both", lambda read_a, read_b: (read_a(), read_b()))


def _rows(result):
    return [asdict(layer) for layer in result.layers]


@pytest.mark.parametrize("pair", [("cnn_numpy.py", "cnn_torch.py"), ("mlp_numpy.py", "mlp_torch.py")])
def test_two_dumps_compare_the_same_on_two_cores_as_on_one(tmp_path, monkeypatch, pair):
    traced = runner.run_pair(*(modelfile.load(FIXTURES / f) for f in pair))
    paths = [store.write(t, tmp_path / f"{side}.h5") for side, t in (("a", traced.a), ("b", traced.b))]
    monkeypatch.setattr(metrics, "SPLIT", 2)  # every tensor of two blocks or more split between the threads
    monkeypatch.setattr(metrics, "BLOCK", 64)
    with store.Dump(paths[0]) as a, store.Dump(paths[1]) as b:
        two = comparing.compare(a, b)
    _one_core(monkeypatch)
    with store.Dump(paths[0]) as a, store.Dump(paths[1]) as b:
        one = comparing.compare(a, b)
    assert repr(_rows(two)) == repr(_rows(one))
    assert repr((two.forward, two.backward, two.nonfinite, two.match)) == repr((one.forward, one.backward, one.nonfinite, one.match))


def test_a_split_tensor_gives_the_figures_of_one_pass_to_the_last_bit(monkeypatch):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((700, 300))
    b = a + rng.standard_normal(a.shape) * 1e-9
    a[3, ::7], b[5, ::11] = np.nan, np.inf
    cases = [(a, b), (a.T, b.T.copy()), (a[:, :1], b[:, :1]), (a * 1e200, b * 1e200)]
    monkeypatch.setattr(metrics, "BLOCK", 4096)
    split = [repr(asdict(metrics.diff("x", x, y, 1e-7, 0.5))) for x, y in cases]
    _one_core(monkeypatch)
    assert split == [repr(asdict(metrics.diff("x", x, y, 1e-7, 0.5))) for x, y in cases]
