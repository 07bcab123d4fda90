"""Culprits placed where they are made: fused layers aligned by value, values with several consumers, code between
captured layers, a side whose backward raises, missing or misshapen gradients, and zooming into a module."""

import json

import numpy as np
import pytest
import torch

import layerdiff
from layerdiff.adapter import register
from layerdiff.testing import FakeAdapter

from conftest import FIXTURES, one_error_line, write


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run per pair these tests read, as (exit-free) JSON reports and texts."""
    out = tmp_path_factory.mktemp("locate")
    pairs = {
        "fused": ("fused_numpy.py", "fused_torch.py"),
        "gelu": ("gelu_torch.py", "gelu_numpy.py"),
        "dk": ("fork_attention_dk_unscaled.py", "attn_torch.py"),
        "key": ("fork_attention_key_input_grad.py", "attn_torch.py"),
        "unscaled": ("bug_attention_unscaled.py", "attn_torch.py"),
        "raises": ("bug_maxpool_backward_raises.py", "cnn_torch.py"),
        "raises_b": ("cnn_torch.py", "bug_maxpool_backward_raises.py"),
        "linen": ("bug_linen_flatten_channels_last.py", "cnn_torch.py"),
    }
    found = {}
    for key, (a, b) in pairs.items():
        result = layerdiff.run(FIXTURES / a, FIXTURES / b, out=out / key)
        found[key] = (result.json(), " ".join(str(result).split()))
    return found


def culprits(report):
    return [(c["layer_a"], c["pass"]) for c in report["culprits"]]


def test_a_dense_layer_with_its_activation_inside_is_aligned_by_value_with_linear_and_relu(runs):
    report, text = runs["fused"]
    assert report["match"] and report["culprits"] == []
    assert report["fused"]["b"] == ["fc1+relu1", "fc2+tanh2"] and report["only_b"] == []
    assert "fused: fused_torch.py's fc1, relu1 are fused_numpy.py's fc1" in text


def test_an_activation_called_as_a_function_is_code_between_layers_not_a_layer_of_its_own(runs):
    report, _ = runs["gelu"]
    assert report["match"] and report["only_b"] == ["act"]


def test_a_wrong_gradient_made_by_attention_code_is_blamed_on_that_code_not_on_the_next_layer(runs):
    report, text = runs["dk"]
    assert culprits(report) == [("attn", "backward")]
    assert report["culprits"][0]["gap"]["after"] == ["attn.v", "attn.v"]
    assert "attn (between attn.v and attn.proj) [backward] grad_output of attn.k" in text
    assert report["backward"]["first_divergence"]["layer_a"] == "attn"


def test_a_gradient_summed_over_consumers_that_one_side_does_not_separate_is_said_so(runs):
    report, _ = runs["key"]
    assert culprits(report) == [("consumers of ln", "backward")]
    note = report["culprits"][0]["note"]
    assert "attn.q, attn.k, attn.v all read ln's output" in note and "cannot be told" in note


def test_a_bug_in_a_modules_own_code_is_zoomed_into_down_to_the_operation(runs):
    report, text = runs["unscaled"]
    assert culprits(report) == [("attn", "forward"), ("attn", "backward")]
    (zoom,) = report["zooms"]
    assert (zoom["layer_a"], zoom["name"], zoom["consumer"]) == ("attn", "mul", "op 12 (softmax)")
    assert "zoom attn: op 11 (mul), the input of op 12 (softmax)," in text
    assert {l["layer_a"]: l["verdict"] for l in report["layers"]}["attn.proj"] == "inherited"


def test_a_jax_model_is_zoomed_into_through_its_jaxpr(runs):
    report, _ = runs["linen"]
    (zoom,) = report["zooms"]
    assert zoom["layer_a"] == "" and zoom["name"] == "reshape"  # the flatten in NHWC order
    assert "no operation of b computes" in zoom["said"]


def test_a_backward_that_raises_is_a_finding_with_everything_recorded_before_it(runs):
    report, text = runs["raises"]
    assert culprits(report) == [("pool1", "backward")] and report["culprits"][0]["problem"] == "raised"
    assert "pool1 (b: 2) [backward] raised in bug_maxpool_backward_raises.py: ValueError: operands could not be broadcast" in text
    assert "(bug_maxpool_backward_raises.py, line 14)" in text
    rows = {l["layer_a"]: l for l in report["layers"]}
    assert all(l["verdicts"]["forward"] == "ok" for l in report["layers"])  # the forward, compared in full
    assert rows["conv2"]["verdicts"]["backward"] == "ok" and rows["conv2"]["param_grads"]  # after it: compared
    assert "its backward never ran in bug_maxpool_backward_raises.py" in rows["conv1"]["notes"][0]
    assert not [t for t in rows["conv1"]["param_grads"] if t["problem"] == "missing gradient"]


def test_the_replayed_side_raising_in_its_backward_is_named_too(runs):
    report, _ = runs["raises_b"]
    assert [(c["layer_b"], c["problem"]) for c in report["culprits"]] == [("pool1", "raised")]


def test_a_raising_backward_exits_1_and_its_dumps_hold_what_was_recorded(cli):
    code, out, err = cli("run", FIXTURES / "bug_maxpool_backward_raises.py", FIXTURES / "cnn_torch.py", "-o", "out")
    assert code == 1 and "error" not in err
    dumped = layerdiff.store.Dump("out/bug_maxpool_backward_raises.h5")
    with dumped as d:
        assert "grad_output" in d.layers[2].tensors and "grad_input" not in d.layers[2].tensors


def test_a_dump_of_a_side_whose_backward_raises_stops_with_its_error(cli):
    code, _, err = cli("dump", FIXTURES / "bug_maxpool_backward_raises.py", "-o", "a.h5")
    assert code == 2 and "in the backward pass of layer 'pool1'" in one_error_line(err)


@pytest.mark.parametrize("variant,sentence", [
    ("bug_weight_grad_never_written.py", "bug_weight_grad_never_written.py gives no gradient for fc3.W"),
    ("bug_weight_grad_transposed_shape.py", "fc4.W's gradient has shape (10, 32), its weight (32, 10): it is transposed"),
])
def test_a_missing_or_misshapen_gradient_is_said_not_compared(run_json, variant, sentence):
    _, report = run_json(FIXTURES / variant, FIXTURES / "mlp_torch.py")
    (c,) = report["culprits"]
    assert sentence in c["note"] and c["pass"] == "param_grad"
    assert sentence in report["backward"]["first_divergence"]["note"]


def test_gradcheck_says_a_gradient_is_missing_or_misshapen():
    result = layerdiff.gradcheck(FIXTURES / "bug_weight_grad_transposed_shape.py")
    assert result.culprits == ["fc4"]
    assert any("it is transposed; checked as not a gradient of it" in n for n in result.notes)


class _Residual(torch.nn.Module):
    """fc -> eval-mode dropout, whose output is read by a LayerNorm and by the residual around it."""

    def __init__(self, eps=1e-5):
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.drop, self.ln, self.head = torch.nn.Linear(6, 6), torch.nn.Dropout(0.1), torch.nn.LayerNorm(6, eps=eps), torch.nn.Linear(6, 2)
        self.eval()

    def forward(self, x):
        h = self.drop(self.fc(x))
        return self.head(h + self.ln(h))


def test_a_module_returning_its_input_at_a_fork_is_not_blamed_for_what_reaches_it():
    # The LayerNorm's epsilon differs; the dropout returns its input tensor itself, read by the LayerNorm and the
    # residual: the gradient forced at its output must reach it, and it is no culprit.
    result = layerdiff.compare_models(_Residual(eps=0.5), _Residual(), input_shape=(4, 6))
    assert {c.layer_a for c in result.comparison.culprits} == {"ln"}


def test_a_modules_full_backward_hook_is_seen_by_capture():
    bug, ref = _Residual(), _Residual()
    bug.ln.register_full_backward_hook(lambda m, gin, gout: (torch.zeros_like(gin[0]),))
    result = layerdiff.compare_models(bug, ref, input_shape=(4, 6))
    assert [(c.layer_a, c.pass_) for c in result.comparison.culprits] == [("ln", "backward")]
    assert "all zeros" in result.comparison.culprits[0].hint


NCHW_PERMUTED = (
    "import torch\n"
    "class Net(torch.nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.same, self.flatten, self.dense = torch.nn.Identity(), torch.nn.Flatten(), torch.nn.Linear(60, 3, bias=False)\n"
    "    def forward(self, x):\n"
    "        return self.dense(self.flatten(self.same(x * 1.0).permute(0, 2, 3, 1)))\n"
    "model = Net()\n"
)
LAYERS = (
    "import numpy as np\n"
    "class Same:\n    def forward(self, x): return x * 1.0\n    def backward(self, d): return d\n"
    "class Dense:\n"
    "    def __init__(self): self.W = np.random.default_rng(0).standard_normal((60, 3))\n"
    "    def forward(self, x): self.x = x; return x @ self.W\n"
    "    def backward(self, d): self.dW = self.x.T @ d; return d @ self.W.T\n"
)


def test_an_input_whose_axes_code_reorders_is_a_layout_change_not_a_culprit(tmp_path):
    # A channels-first NumPy network whose Flatten lays its input out channels last itself, against PyTorch code that
    # permutes before nn.Flatten: the flatten's inputs hold the same values, axes in another order.
    a = write(tmp_path, "nchw_np.py", LAYERS + (
        "class Flatten:\n"
        "    def forward(self, x): self.shape = x.shape; return x.transpose(0, 2, 3, 1).reshape(len(x), -1)\n"
        "    def backward(self, d): n, c, h, w = self.shape; return d.reshape(n, h, w, c).transpose(0, 3, 1, 2)\n"
        "model = [Same(), Flatten(), Dense()]\n"
        "input_shape = (2, 5, 3, 4)\n"
    ))
    b = write(tmp_path, "nchw.py", NCHW_PERMUTED)
    report = layerdiff.run(a, b, out=tmp_path / "out", layer_map={"0": "same", "1": "flatten", "2": "dense"}).json()
    assert report["culprits"] == [], report["culprits"]
    flatten = next(l for l in report["layers"] if l["layer_a"] == "1")
    assert any("axes in another order" in n for n in flatten["notes"])


def test_a_channels_last_flatten_meets_code_that_permutes_before_flattening_as_it_is(tmp_path):
    # A channels-last network's Flatten takes its input as the model holds it (runner.Side.run), which is what the
    # PyTorch port permutes to before nn.Flatten: the inputs agree as they are.
    a = write(tmp_path, "nhwc.py", LAYERS + (
        "class Flatten:\n"
        "    def forward(self, x): self.shape = x.shape; return x.reshape(len(x), -1)\n"
        "    def backward(self, d): return d.reshape(self.shape)\n"
        "model = [Same(), Flatten(), Dense()]\n"
        "input_shape = (2, 3, 4, 5)\n"
        "activation_layout = 'N H W C'\n"
    ))
    b = write(tmp_path, "nchw.py", NCHW_PERMUTED)
    report = layerdiff.run(a, b, out=tmp_path / "out", layer_map={"0": "same", "1": "flatten", "2": "dense"}).json()
    assert report["culprits"] == [], report["culprits"]
    assert all(layer["verdict"] == "ok" for layer in report["layers"])


def test_zoom_on_the_command_line_names_no_operation_on_a_clean_pair(cli):
    code, out, _ = cli("run", FIXTURES / "attn_torch.py", FIXTURES / "attn_torch.py", "--zoom", "attn", "--json")
    (zoom,) = json.loads(out)["zooms"]
    assert code == 0 and zoom["op"] is None and zoom["said"] == "no operation differs given equal inputs"


def test_zoom_into_a_module_neither_side_has_is_one_line_and_writes_no_dump(cli, tmp_path):
    code, _, err = cli("run", FIXTURES / "attn_torch.py", FIXTURES / "attn_torch.py", "--zoom", "attn.nope", "-o", "out")
    assert code == 2 and "--zoom names 'attn.nope'" in one_error_line(err)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_zoom_into_a_numpy_side_says_what_to_do_instead(cli):
    code, _, err = cli("run", FIXTURES / "attn_numpy.py", FIXTURES / "attn_torch.py", "--zoom", "attn")
    assert code == 2 and "tap the values inside the layer" in one_error_line(err)


def test_an_adapter_without_zoom_still_loads_and_is_not_zoomed_into():
    from types import SimpleNamespace

    from layerdiff import zoom
    from layerdiff.adapter import Feed

    with register(FakeAdapter()) as fake:  # checked as a plugin is: zoom is optional
        side = SimpleNamespace(adapter=fake, source="fake.py")
        found = zoom.zoom(side, side, Feed([], None, np.zeros), "fc", "fc")
    assert found.op is None and found.said.startswith("fake.py (fake) cannot be zoomed into")
