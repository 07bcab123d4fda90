"""overfit: a clean network drives a tiny batch's loss toward zero; two implementations trace one curve until a
bug makes them part, at step 0 for a forward bug and step 1 for a gradient bug."""

import json

import pytest

import layerdiff

from conftest import FIXTURES, write
from test_cli import one_error_line

MLP, MLP_TORCH = FIXTURES / "mlp_numpy.py", FIXTURES / "mlp_torch.py"


def test_clean_network_goes_toward_zero():
    result = layerdiff.overfit(MLP)
    (curve,) = result.curves
    assert result.ok and curve.verdict == "toward zero" and len(curve.losses) == 201
    assert curve.losses[-1] < 0.01 * curve.losses[0]


def test_two_implementations_trace_the_same_curve():
    result = layerdiff.overfit(MLP, MLP_TORCH, steps=50)
    assert result.parted is None
    a, b = (c.losses for c in result.curves)
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-10


@pytest.mark.parametrize("variant,step", [("bug_missing_bias_grad.py", 1), ("bug_transposed_weight.py", 0)])
def test_curves_part_where_the_bug_first_shows(variant, step):
    result = layerdiff.overfit(FIXTURES / variant, MLP_TORCH, steps=20)
    assert result.parted == step and not result.ok


def test_a_network_that_cannot_fit_is_not_called_converging():
    result = layerdiff.overfit(FIXTURES / "sick_vanishing.py")
    assert result.curves[0].verdict in ("decreasing", "stuck") and not result.ok


def test_too_large_a_learning_rate_diverges():
    assert layerdiff.overfit(MLP, lr=2.0, steps=20).curves[0].verdict == "diverged"


def test_a_numpy_file_may_give_its_own_update_rule(tmp_path):
    write(tmp_path, "own.py", (
        "import sys\n"
        f"sys.path.insert(0, {str(FIXTURES)!r})\n"
        "from mlp_numpy import MLP, SoftmaxCrossEntropy, input_shape, targets\n"
        "model, loss = MLP(), SoftmaxCrossEntropy()\n"
        "calls = []\n"
        "def update(model, lr):\n"
        "    calls.append(lr)\n"
        "    for layer in model.layers:\n"
        "        for k in layer.params:\n"
        "            layer.params[k] -= lr * layer.grads[k]\n"
    ))
    own = layerdiff.overfit(tmp_path / "own.py", steps=30)
    generic = layerdiff.overfit(MLP, steps=30)
    assert own.curves[0].update == "the file's update()" and generic.curves[0].update == "sgd"
    assert own.curves[0].losses == pytest.approx(generic.curves[0].losses, rel=1e-12)


def test_cli(cli):
    code, out, _ = cli("overfit", MLP, "--steps", "100")
    assert code == 0 and "mlp_numpy.py: toward zero" in out
    code, out, _ = cli("overfit", FIXTURES / "bug_missing_bias_grad.py", MLP_TORCH, "--steps", "10")
    assert code == 1 and "the curves part at step 1" in " ".join(out.split())
    code, out, _ = cli("overfit", MLP, "--steps", "5", "--json")
    assert code == 1 and len(json.loads(out)["curves"][0]["losses"]) == 6  # 5 steps are not enough: exit 1


def test_cli_bad_input(cli, tmp_path):
    write(tmp_path, "noloss.py", "import torch\nmodel = torch.nn.Linear(4, 2)\ninput_shape = (2, 4)\n")
    code, _, err = cli("overfit", "noloss.py")
    assert code == 2 and "noloss.py defines no loss" in one_error_line(err)
    code, _, err = cli("overfit", FIXTURES / "dropout_numpy.py")
    assert code == 2 and "dropout_numpy.py is not deterministic" in one_error_line(err)
    code, _, err = cli("overfit", "nope.py")
    assert code == 2 and "nope.py: no such file" in one_error_line(err)
    code, _, err = cli("overfit", MLP, "--lr", "0")
    assert code == 2 and "0.0 is not a learning rate: give a finite number above 0" in one_error_line(err)
