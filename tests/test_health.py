"""inspect: healthy fixtures flag nothing, each unhealthy fixture is flagged for exactly its problem, and the
measures behave at their edges (zero biases, -inf masks, activations named by hand)."""

import json
import runpy
import sys

import numpy as np
import pytest

import layerdiff
from layerdiff.health import activation_of, inspect
from layerdiff.records import InMemory, LayerRecord, ParamRecord, Trace

from conftest import FIXTURES
from test_cli import one_error_line

HEALTHY = ["mlp_numpy.py", "mlp_torch.py", "cnn_numpy.py", "cnn_torch.py"]
SICK = sorted(FIXTURES.glob("sick_*.py"))


def declared(path):
    sys.path.insert(0, str(path.parent))
    try:
        return runpy.run_path(str(path))["HEALTH"]
    finally:
        sys.path.remove(str(path.parent))


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_fixture_flags_nothing(name):
    health = layerdiff.inspect(FIXTURES / name)
    assert health.healthy, str(health)


@pytest.mark.parametrize("path", SICK, ids=lambda p: p.stem)
def test_unhealthy_fixture_is_flagged_for_exactly_its_problem(path):
    health = layerdiff.inspect(path)
    found: dict[str, list[str]] = {}
    for flag in health.flags:
        found.setdefault(flag.kind, []).append(flag.where)
    assert found == declared(path)["flags"], str(health)


def test_there_is_an_unhealthy_fixture_for_each_problem():
    assert {kind for path in SICK for kind in declared(path)["flags"]} == {"saturated", "dead", "vanishing", "nonfinite"}


def test_zero_initialized_biases_have_no_ratio_and_are_never_flagged():
    health = layerdiff.inspect(FIXTURES / "mlp_numpy.py")
    bias = next(p for p in health.params if p.name == "fc1.b")
    assert bias.weight_norm == 0 and bias.ratio is None and bias.bias
    assert next(p for p in health.params if p.name == "fc1.W").ratio == pytest.approx(0.0347, rel=1e-2)


def test_learning_rate_gives_the_update_ratio_and_flags_it_outside_its_band():
    ratios = {p.name: p.ratio for p in layerdiff.inspect(FIXTURES / "mlp_numpy.py").params}
    health = layerdiff.inspect(FIXTURES / "mlp_numpy.py", lr=1.0)
    assert {p.name: p.update for p in health.params} == {k: None if v is None else 1.0 * v for k, v in ratios.items()}
    assert [f.kind for f in health.flags] == ["update"] and "steps too large" in health.flags[0].message
    assert layerdiff.inspect(FIXTURES / "mlp_numpy.py", lr=0.01).healthy


def test_vanishing_gradients_name_the_weights_that_learn_slowly_once():
    (flag,) = layerdiff.inspect(FIXTURES / "sick_vanishing.py").flags
    assert flag.kind == "vanishing" and "learning slowly: fc1.W, fc2.W" in flag.message


def record(name, kind, **tensors):
    return LayerRecord(name, kind, {k: np.asarray(v, dtype=float) for k, v in tensors.items()})


def masked_attention(neg_inf=-np.inf, grad=1.0):
    """scores -> mask (adds -inf) -> softmax: -inf in the mask's output is meant, and finite after softmax."""
    scores = np.array([[1.0, 2.0, 3.0]])
    masked = scores + np.array([[0.0, 0.0, neg_inf]])
    probs = np.exp(masked - masked.max()) / np.exp(masked - masked.max()).sum()
    ones = np.ones((1, 3))
    layers = [
        record("mask", "Mask", input=scores, output=masked, grad_output=ones * grad, grad_input=ones * grad),
        record("softmax", "Softmax", input=masked, output=probs, grad_output=ones, grad_input=ones * grad),
    ]
    return InMemory(Trace(layers, [], 0.0), "attention")


def test_minus_inf_in_a_mask_can_be_allowed():
    flagged = inspect(masked_attention())
    assert [(f.kind, f.where) for f in flagged.flags] == [("nonfinite", "mask")]
    assert flagged.nonfinite[0].neginf == 1
    assert inspect(masked_attention(), allow_neg_inf=["mask", "softmax"]).healthy
    # NaN is never allowed, and neither is -inf in a gradient.
    assert not inspect(masked_attention(neg_inf=np.nan), allow_neg_inf=["mask", "softmax"]).healthy
    backward = inspect(masked_attention(grad=-np.inf), allow_neg_inf=["mask", "softmax"])
    assert backward.backward_origin == "softmax" and backward.forward_origin is None


def test_nan_origin_names_the_first_layer_with_finite_inputs():
    health = layerdiff.inspect(FIXTURES / "sick_nan.py")
    assert health.forward_origin == "log2" and health.flags[0].where == "log2"
    assert any(n.where == "log2 output" and n.nan > 0 for n in health.nonfinite)


def test_activation_kind_from_the_layer_kind_the_name_or_the_user():
    assert activation_of("0", "ReLU") == "relu" and activation_of("x", "Tanh") == "tanh"
    assert activation_of("encoder.sig2", "tap") == "sigmoid" and activation_of("relu_3#2", "tap") == "relu"
    assert activation_of("fc1", "Linear") == "" and activation_of("act", "LeakyReLU") == ""
    assert activation_of("act", "Custom", {"act": "tanh"}) == "tanh"
    assert activation_of("relu1", "ReLU", {"relu1": "none"}) == ""


def test_a_saturated_layer_under_another_name_is_found_once_named():
    sat = np.full((8, 4), 0.999)
    trace = Trace([record("act", "Custom", input=sat, output=sat, grad_output=sat, grad_input=sat)], [], 0.0)
    assert inspect(InMemory(trace, "t")).healthy
    flagged = inspect(InMemory(trace, "t"), activations={"act": "sigmoid"})
    assert [(f.kind, f.where) for f in flagged.flags] == [("saturated", "act")]


def test_dead_units_need_enough_samples_to_be_called_dead():
    out = np.zeros((2, 4))
    out[:, 0] = 1.0  # three of four units off for both examples: chance, with two
    trace = Trace([record("relu", "ReLU", input=out, output=out, grad_output=out, grad_input=out)], [], 0.0)
    layer = inspect(InMemory(trace, "t")).layers[0]
    assert layer.dead == 0.75 and layer.samples == 2
    assert inspect(InMemory(trace, "t")).healthy


def test_exploding_gradients():
    layers = [record(f"fc{i}", "Dense", input=np.ones((2, 2)), output=np.ones((2, 2)), grad_output=np.full((2, 2), 10.0 ** (4 - i)),
                     grad_input=np.ones((2, 2))) for i in range(5)]
    health = inspect(InMemory(Trace(layers, [], 0.0), "t"))
    assert health.depth_ratio == pytest.approx(1e4) and [f.kind for f in health.flags] == ["exploding"]


def test_grad_weight_ratio_bands():
    params = [ParamRecord("slow.W", "fc", "in out", np.ones((4, 4)), np.full((4, 4), 1e-7)),
              ParamRecord("fast.W", "fc", "in out", np.ones((4, 4)), np.full((4, 4), 2.0))]
    health = inspect(InMemory(Trace([], params, 0.0), "t"))
    assert [(f.kind, f.where) for f in health.flags] == [("slow", "slow.W"), ("unstable", "fast.W")]


def test_inspect_cli_on_a_dump(cli):
    cli("dump", FIXTURES / "sick_dead_relu.py", "-o", "d.h5")
    code, out, _ = cli("inspect", "d.h5")
    assert code == 1 and "relu3: dead ReLU: 81% of units off" in " ".join(out.split())
    cli("dump", FIXTURES / "mlp_torch.py", "-o", "t.h5")
    code, out, _ = cli("inspect", "t.h5", "--json")
    assert code == 0 and json.loads(out)["flags"] == []


def test_inspect_cli_options(cli):
    code, out, _ = cli("inspect", FIXTURES / "mlp_numpy.py", "--activation", "relu1=none", "--lr", "0.01")
    assert code == 0 and "‖Δw‖/‖w‖" in out
    code, out, _ = cli("inspect", FIXTURES / "mlp_numpy.py", "--activation", "fc1=sigmoid")  # outputs far outside (0, 1)
    assert code == 1 and "fc1: sigmoid saturated" in " ".join(out.split())
    code, _, err = cli("inspect", FIXTURES / "mlp_numpy.py", "--activation", "fc1=swish")
    assert code == 2 and "the kind must be one of relu, sigmoid, tanh, none" in err


def test_inspect_cli_bad_input(cli, tmp_path):
    code, _, err = cli("inspect", "missing.h5")
    assert code == 2 and "missing.h5: no such file" in one_error_line(err)
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = cli("inspect", "notes.txt")
    assert code == 2 and "notes.txt is not an HDF5 file" in one_error_line(err)


def test_run_report_has_a_health_section_per_side(cli):
    code, out, _ = cli("run", FIXTURES / "mlp_numpy.py", FIXTURES / "mlp_torch.py", "-o", "out")
    text = " ".join(out.split())
    assert code == 0 and "health mlp_numpy.py: nothing flagged" in text and "health mlp_torch.py: nothing flagged" in text
    code, out, _ = cli("run", FIXTURES / "sick_saturated_sigmoid.py", FIXTURES / "sick_saturated_sigmoid.py", "-o", "sick", "--json")
    report = json.loads(out)
    assert [f["where"] for f in report["health"]["a"]["flags"]] == ["sig1", "sig2"]
