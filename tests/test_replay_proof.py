"""A replay proves it was forced: an adapter that ignores forcing gets a refusal, not culprits at correct layers."""

import numpy as np
import pytest

import layerdiff
from layerdiff.adapter import register
from layerdiff.testing import FakeAdapter, FakeLayer, FakeNet


def net(bug: bool = False) -> FakeNet:
    """fc1, act, fc2; with ``bug``, act's backward forgets the square of tanh' (1 - tanh), a backward culprit."""
    act = FakeLayer.tanh("act")
    if bug:
        act = FakeLayer("act", lambda x, w: np.tanh(x), lambda x, w, dy: (dy * (1 - np.tanh(x)), None))
    return FakeNet([FakeLayer.dense("fc1", 6, 8, seed=1), act, FakeLayer.dense("fc2", 8, 4, seed=2)])


def test_an_adapter_honouring_forcing_gets_the_culprit_and_nothing_else():
    with register(FakeAdapter()):
        result = layerdiff.compare_models(net(bug=True), net(), input_shape=(5, 6))
    culprits = [(c.layer_a, c.pass_) for c in result.comparison.culprits]
    assert culprits == [("act", "backward")]
    verdicts = {l.layer_a: l.verdict for l in result.comparison.layers}
    assert verdicts == {"fc1": "inherited", "act": "culprit", "fc2": "ok"}


def test_an_adapter_ignoring_forcing_is_refused_naming_it_and_the_layer():
    with register(FakeAdapter(honours_forcing=False)):
        with pytest.raises(layerdiff.AdapterError, match=r"^The fake adapter did not force layer 'fc1' of b in the replay"):
            layerdiff.compare_models(net(), net(bug=True), input_shape=(5, 6))


class Claiming(FakeAdapter):
    """Says it forced every layer, and forced none."""

    def run(self, model, spec, feed, forcing=None):
        trace = super().run(model, spec, feed, None)
        if forcing is not None:
            trace.forced = {r.name: {"output", "grad_output"} for r in trace.layers}
        return trace


class Reading(FakeAdapter):
    """Reads every forced value and notes it, then hands on its own values."""

    def run(self, model, spec, feed, forcing=None):
        trace = super().run(model, spec, feed, None)
        if forcing is not None:
            for r in trace.layers:
                for table in (forcing.outputs, forcing.grad_outputs):
                    table.get(r.name)
            trace.forced = {r.name: {"output", "grad_output"} for r in trace.layers}
        return trace


@pytest.mark.parametrize("adapter", [Claiming(), Reading()], ids=["claims without reading", "reads without using"])
def test_an_adapter_that_only_claims_to_force_is_refused(adapter):
    shifted = net()
    shifted.layers[0].fn = lambda x, w: x @ w + 1.0  # fc1's output differs: what it hands on must be A's
    with register(adapter):
        with pytest.raises(layerdiff.AdapterError, match=r"did not force layer 'fc1' of b"):
            layerdiff.compare_models(net(), shifted, input_shape=(5, 6))


def test_the_command_line_refuses_on_one_line_with_exit_2(cli, tmp_path, monkeypatch):
    from conftest import one_error_line, write

    for name, bug in (("a.py", False), ("b.py", True)):
        write(tmp_path, name, (
            "from layerdiff.testing import FakeLayer, FakeNet\n"
            "import numpy as np\n"
            f"act = FakeLayer('act', lambda x, w: np.tanh(x), lambda x, w, dy: (dy * (1 - np.tanh(x){'' if bug else ' ** 2'}), None))\n"
            "model = FakeNet([FakeLayer.dense('fc1', 6, 8, seed=1), act, FakeLayer.dense('fc2', 8, 4, seed=2)])\n"
            "input_shape = (5, 6)\n"
        ))
    with register(FakeAdapter(honours_forcing=False)):
        code, out, err = cli("run", tmp_path / "a.py", tmp_path / "b.py")
    assert code == 2, out + err
    assert "did not force layer 'fc1' of b.py" in one_error_line(err)
