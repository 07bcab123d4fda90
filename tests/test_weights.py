"""--weights own: each side keeps the weights its file built or loaded; they are compared through the mapping first,
so that a wrong conversion (packed gates in the wrong order) is named at its parameters, then at its layer."""

import json

import numpy as np
import pytest
import torch

import layerdiff
from layerdiff.records import ParamRecord
from layerdiff.sync import link
from layerdiff.weights import carried, weight_check

from conftest import FIXTURES, expected

HERE = FIXTURES / "weights"
GATES = HERE / "bug_lstm_gate_order.py"


@pytest.fixture(scope="module")
def gate_order():
    want = expected(GATES)
    return want, layerdiff.compare_paths(HERE / want["reference"], GATES, weights=want["weights"], once=True)


def test_wrong_gate_order_is_named_at_each_parameter_then_at_the_layer(gate_order):
    want, result = gate_order
    check = result.comparison.weights
    assert {p.b: p.verdict for p in check.params} == want["params"]
    assert all("blocks along axis 0 are a's 0 2 1 3" in p.detail for p in check.params if p.verdict == "gates reordered")
    culprits = result.comparison.culprits
    assert [c.layer_b for c in culprits] == [want["layer"]] * len(culprits) and culprits[0].pass_ == want["pass"]
    assert culprits[0].hint.startswith("Its weights differ: bug_lstm_gate_order.py's lstm.weight_ih_l0 is lstm_numpy.py's")
    assert not result.match
    text = str(result)
    assert text.index("weights  bug_lstm_gate_order.py's lstm.weight_ih_l0") < text.index("culprit  lstm")


def test_the_same_conversion_bug_is_invisible_when_a_weights_are_copied(gate_order):
    want, _ = gate_order
    assert layerdiff.compare_paths(HERE / want["reference"], GATES, once=True).match


def test_a_right_conversion_checks_equal_to_float32_rounding_and_the_pair_agrees(cli):
    code, out, _ = cli("run", HERE / "lstm_numpy.py", HERE / "lstm_torch.py", "--weights", "own", "--json")
    report = json.loads(out)
    assert code == 0 and report["match"] is True
    verdicts = {p["b"]: p["verdict"] for p in report["weights"]["check"]}
    assert set(verdicts.values()) <= {"equal", "rounded"} and "rounded" in verdicts.values()
    assert report["weights"]["from"] == ""


def test_golden_dump_against_a_converted_script_keeps_the_scripts_weights(cli):
    cli("dump", HERE / "lstm_numpy.py", "-o", "golden.h5")
    code, out, _ = cli("compare", "golden.h5", GATES, "--weights", "own", "--json")
    report = json.loads(out)
    assert code == 1
    assert {p["b"]: p["verdict"] for p in report["weights"]["check"]}["lstm.weight_ih_l0"] == "gates reordered"
    assert [(c["layer_b"], c["pass"]) for c in report["culprits"]][0] == ("lstm", "forward")


class Holder(torch.nn.Module):
    """A linear layer beside a parameter no input reaches."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(4, 3)
        self.unused = torch.nn.Parameter(torch.ones(5))

    def forward(self, x):
        return self.fc(x)


def test_weights_that_differ_where_every_layer_agrees_are_said_and_not_passed():
    other = Holder()
    with torch.no_grad():
        other.unused.mul_(3)
    result = layerdiff.compare_models(Holder(), other, input_shape=(2, 4), weights="own")
    assert not result.match
    text = " ".join(str(result).split())
    assert "result: every layer agrees, but their weights differ" in text
    assert "b's unused is a's unused scaled (by 3)" in text and "these inputs do not reach it" in text


def test_unknown_weights_choice_is_one_line_in_the_callers_terms(cli):
    with pytest.raises(layerdiff.ModelFileError, match=r"^weights= must be one of a, own, not 'mine'"):
        layerdiff.compare_paths(HERE / "lstm_numpy.py", HERE / "lstm_torch.py", weights="mine")
    code, _, err = cli("run", HERE / "lstm_numpy.py", HERE / "lstm_torch.py", "--weights", "mine")
    assert code == 2 and "'mine' is not one of 'a', 'own'" in err


def check(a, b, layout_a="out in", layout_b="out in"):
    src, dst = [ParamRecord("w", "l", layout_a, a)], [ParamRecord("w", "l", layout_b, b)]
    return weight_check(src, dst, link(src, dst, {}, "a.py", "b.py"), "a.py", "b.py").params[0]


RNG = np.random.default_rng(0)
W = RNG.standard_normal((6, 6))
KERNEL = RNG.standard_normal((4, 3, 2, 2))


@pytest.mark.parametrize(
    "a,b,verdict,detail",
    [
        (W, W.copy(), "equal", ""),
        (W, W.astype(np.float32), "rounded", "max rel"),
        (W, W.T.copy(), "transposed", ""),
        (KERNEL, KERNEL.transpose(1, 0, 2, 3).reshape(4, 3, 2, 2).copy(), "different", "max rel"),
        (KERNEL[:3, :3], KERNEL[:3, :3].transpose(1, 0, 3, 2).copy(), "permuted", "axes (1, 0, 3, 2)"),
        (W, np.concatenate([W[2:4], W[:2], W[4:]]), "gates reordered", "its 3 blocks along axis 0 are a's 1 0 2"),
        (W, 0.5 * W, "scaled", "by 0.5"),
        (W, -W, "scaled", "by -1"),
        (W, W + 1e-3, "different", "max rel"),
    ],
    ids=["equal", "rounded", "transposed", "reshaped", "permuted", "gru-gates", "halved", "negated", "different"],
)
def test_each_parameter_is_called_what_its_difference_is(a, b, verdict, detail):
    found = check(a, b)
    assert found.verdict == verdict and detail in found.detail


def test_the_precision_values_carry_is_read_from_the_values_not_the_dtype():
    x = RNG.standard_normal(100)
    as_bf16 = torch.tensor(x, dtype=torch.bfloat16).double().numpy()
    assert [carried(v) for v in (x, x.astype(np.float32), x.astype(np.float16).astype(np.float64), as_bf16)] == [
        "float64", "float32", "float16", "bfloat16"]
    # A bfloat16 conversion of a float64 weight is that weight rounded, not a different one.
    assert check(x.reshape(10, 10), as_bf16.reshape(10, 10)).verdict == "rounded"
