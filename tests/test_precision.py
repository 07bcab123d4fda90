"""--dtype native: each side that computes below float64 is judged against its own float64 rerun. A bug in the code
is found at its layer however coarse the side's precision (the float64 reruns part there); a clean bfloat16, float16
or TF32 side passes; a layer that loses more than its precision explains (an overflow in float16) is named."""

import runpy

import numpy as np
import pytest
import torch

import layerdiff
from layerdiff import modelfile, precision, store, twins
from layerdiff.records import LayerInfo, ParamRecord
from layerdiff.stats import TensorInfo

from conftest import FIXTURES, expected, one_error_line

HERE = FIXTURES / "precision"
CLEAN = [("../mlp_numpy.py", "mlp_bf16.py", "bfloat16"), ("../mlp_numpy.py", "mlp_f16.py", "float16"),
         ("rmsnorm_torch.py", "rmsnorm_f16.py", "float16")]
SCALED = ["bug_bf16_scaled.py", "bug_f16_scaled.py"]


def native(a, b, **options):
    return layerdiff.compare_paths(HERE / a, HERE / b, dtype="native", once=True, **options)


@pytest.fixture(scope="module")
def clean():
    return {b: (dtype, native(a, b)) for a, b, dtype in CLEAN}


@pytest.fixture
def matmul_precision():
    """The fixtures that emulate TF32 set torch's global precision: put it back."""
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("a,b,dtype", CLEAN, ids=[b for _, b, _ in CLEAN])
def test_clean_low_precision_side_passes_and_its_rounding_is_measured(clean, a, b, dtype):
    want, result = clean[b]
    c = result.comparison
    assert result.match, str(result)
    assert c.culprits == [] and c.info_b.compute_dtype == want
    [side] = c.precision
    assert side.side == "b" and side.dtype == want and side.ok
    lost = [t.lost for layer in side.layers for t in layer.tensors]
    # It really ran in its precision: some layer rounds by more than float32 could, none by more than is explained.
    assert max(lost) > 1e-5
    assert all(t.lost <= t.explained for layer in side.layers for t in layer.tensors)


@pytest.mark.parametrize("variant", SCALED)
def test_scale_bug_in_a_bf16_or_f16_side_is_named_at_its_layer(variant):
    want = expected(HERE / variant)
    result = native(want["reference"], variant)  # the low-precision side as B, the float64 reference as A
    culprits = [(c.layer_b, c.pass_) for c in result.comparison.culprits]
    assert culprits == [(c["layer"], c["pass"]) for c in want["culprits"]]
    assert not result.match
    # The bug is no rounding: this side loses what its precision explains, and the excess is at fc3 alone.
    [side] = result.comparison.precision
    assert side.ok
    excess = {layer.layer: max(t.excess or 0 for t in layer.tensors) for layer in side.layers}
    assert max(excess, key=excess.get) == "fc3" and excess["fc3"] > 0.1


@pytest.mark.parametrize("variant", SCALED)
def test_scale_bug_is_named_with_its_factor_when_the_low_precision_side_is_a(variant):
    want = expected(HERE / variant)
    c = native(variant, want["reference"]).comparison
    assert [(x.layer_a, x.pass_) for x in c.culprits] == [(x["layer"], x["pass"]) for x in want["culprits"]]
    assert want["hint"] in c.culprits[0].hint
    assert [p.side for p in c.precision] == ["a"]


def test_float16_overflow_that_float64_hides_is_named_by_its_rounding(cli):
    want = expected(HERE / "bug_f16_rmsnorm_overflow.py")["precision"]
    code, out, _ = cli("run", HERE / "rmsnorm_torch.py", HERE / "bug_f16_rmsnorm_overflow.py", "--dtype", "native", "--json")
    import json

    report = json.loads(out)
    assert code == 1 and report["match"] is False
    assert report["culprits"] == []  # the code is right: the two float64 reruns agree everywhere
    [side] = report["precision"]
    assert side["side"] == want["side"] and side["ok"] is False
    failing = {(l["layer"], t["key"]) for l in side["layers"] for t in l["tensors"] if not t["ok"]}
    assert (want["layer"], want["tensor"]) in failing and {layer for layer, _ in failing} == {want["layer"]}
    _, text, _ = cli("run", HERE / "rmsnorm_torch.py", HERE / "bug_f16_rmsnorm_overflow.py", "--dtype", "native", "--force", "-o", "again")
    assert "culprit  norm (b) [precision] output" in text and "a precision problem" in text


def only_below_float64(module, factor):
    """A bug on the low-precision path alone: the layer's output scaled wherever it does not compute in float64."""
    module.register_forward_hook(lambda m, args, out: out if out.dtype == torch.float64 else out * factor)


@pytest.mark.parametrize("dtype,factor", [(torch.bfloat16, 1.2), (torch.float16, 1.2), (torch.bfloat16, 1.05), (torch.float16, 1.05)])
def test_scale_on_the_low_precision_path_only_is_named_by_the_precision_judgement(dtype, factor):
    reference = runpy.run_path(str(FIXTURES / "mlp_numpy.py"))
    side = runpy.run_path(str(FIXTURES / "mlp_torch.py"))["model"].to(dtype)
    only_below_float64(side.fc3, factor)
    result = layerdiff.compare_models(reference["model"], side, input_shape=reference["input_shape"], targets=reference["targets"],
                                      loss_a=reference["loss"], loss_b=torch.nn.CrossEntropyLoss(), dtype="native")
    assert result.comparison.culprits == []  # in float64 the two agree
    named = [(layer, t.key) for layer, t in precision.culprits(result.comparison.precision[0])]
    assert named[0] == ("fc3", "output") and {layer for layer, _ in named} == {"fc3"}


def test_tf32_side_is_judged_by_tf32_rounding_and_a_tf32_product_nobody_declared_is_named(matmul_precision):
    result = native("../mlp_numpy.py", "mlp_tf32.py")
    [side] = result.comparison.precision
    assert result.match and side.matmul == "tf32" and side.dtype == "float32"
    assert max(t.lost for layer in side.layers for t in layer.tensors) > 1e-4  # far above float32's rounding
    # The same products with the setting at float32: the layers lose more than float32 explains.
    torch.set_float32_matmul_precision("highest")
    tf32 = runpy.run_path(str(HERE / "mlp_tf32.py"))
    torch.set_float32_matmul_precision("highest")
    net = tf32["tf32_mlp"]()
    for name in ("fc1", "fc2", "fc3", "fc4"):
        getattr(net, name).always = True
    reference = runpy.run_path(str(FIXTURES / "mlp_numpy.py"))
    result = layerdiff.compare_models(reference["model"], net, input_shape=reference["input_shape"], targets=reference["targets"],
                                      loss_a=reference["loss"], loss_b=torch.nn.CrossEntropyLoss(), dtype="native")
    [side] = result.comparison.precision
    assert side.matmul == "" and not result.match and result.comparison.culprits == []
    assert {layer for layer, _ in precision.culprits(side)} <= {"fc1", "fc2", "fc3", "fc4"}
    assert "fc1" in {layer for layer, _ in precision.culprits(side)}


def test_bfloat16_values_are_recorded_in_float32_with_the_dtype_named(tmp_path):
    result = layerdiff.run(FIXTURES / "mlp_numpy.py", HERE / "mlp_bf16.py", out=tmp_path, dtype="native", once=True)
    with store.Dump(tmp_path / "mlp_bf16.h5") as dump:
        assert dump.info.compute_dtype == "bfloat16" and dump.info.settings["framework_dtype"] == "bfloat16"
        value = dump.tensor(0, "output")
        assert value.dtype == np.float32
        assert not np.any(value.view(np.uint32) & 0xFFFF)  # every value a bfloat16 one: the lower half zero
    assert "b: mlp_bf16.py" in str(result) and "bfloat16)" in str(result)


def test_half_precision_dumps_without_a_float64_rerun_are_refused_unless_a_tolerance_is_given(cli):
    cli("run", FIXTURES / "mlp_numpy.py", HERE / "bug_f16_scaled.py", "--dtype", "native", "--once", "-o", "dumps")
    code, _, err = cli("compare", "dumps/mlp_numpy.h5", "dumps/bug_f16_scaled.h5", "--force")
    assert code == 2
    assert one_error_line(err).startswith("error: bug_f16_scaled.h5 computed in float16, and without a float64 rerun")
    assert "--dtype native" in err and "--rtol R" in err
    code, _, _ = cli("compare", "dumps/mlp_numpy.h5", "dumps/bug_f16_scaled.h5", "--force", "--rtol", "0.05")
    assert code == 1  # its own tolerance, its own judgement: fc3's 20% stands above 5%


def test_report_says_what_each_layer_loses_and_which_lose_the_most(clean):
    text = str(clean["mlp_bf16.py"][1])
    assert "precision of mlp_bf16.py (bfloat16)" in text
    assert "lost here" in text and "explained" in text and "excess" in text and "cumulative" in text
    assert "mlp_bf16.py loses the most precision in: " in text
    report = clean["mlp_bf16.py"][1].json()
    assert report["precision"][0]["ok"] is True and report["precision"][0]["layers"][0]["tensors"][0]["reduction"] == 16


def test_what_precision_explains_falls_with_the_mantissa_and_grows_with_the_reduction_only_where_sums_round():
    assert precision.explained("bfloat16", 64) > precision.explained("float16", 64) == precision.explained("float32", 64, "tf32")
    assert precision.explained("float32", 64, "tf32") > precision.explained("float32", 64) > precision.explained("float64", 64)
    # Half types sum in float32: their n hardly matters; float32's rounding of a sum grows with sqrt(n).
    assert precision.explained("bfloat16", 4096) < 1.01 * precision.explained("bfloat16", 1)
    assert precision.explained("float32", 4096) > 10 * precision.explained("float32", 1)


def layer(**shapes):
    return LayerInfo(0, "fc", "Linear", {k: TensorInfo(tuple(v), "float32", 1.0, 0.0) for k, v in shapes.items()}, ())


@pytest.mark.parametrize("key,want", [("output", 16), ("grad_input", 32), ("fc.weight", 8), ("fc.bias", 8)])
def test_reduction_of_a_linear_layer_is_fan_in_fan_out_or_batch(key, want):
    fc = layer(input=(8, 16), output=(8, 32), grad_output=(8, 32), grad_input=(8, 16))
    params = [ParamRecord("fc.weight", "fc", "out in", np.zeros((32, 16))), ParamRecord("fc.bias", "fc", "out", np.zeros(32))]
    assert precision.reduction(fc, key, params) == want


def test_reduction_of_a_convolution_counts_its_window_and_an_unknown_layout_falls_back_to_what_it_reads():
    conv = layer(input=(4, 3, 8, 8), output=(4, 8, 8, 8), grad_output=(4, 8, 8, 8))
    weight = ParamRecord("w", "conv", "O I H W", np.zeros((8, 3, 3, 3)))
    assert precision.reduction(conv, "output", [weight]) == 27 and precision.reduction(conv, "grad_input", [weight]) == 72
    assert precision.reduction(conv, "w", [weight]) == 4 * 8 * 8
    guessed = ParamRecord("W", "fc", "in out?", np.zeros((12, 12)))
    assert precision.reduction(layer(input=(8, 16), output=(8, 12)), "output", [guessed]) == 8 * 16


def test_a_side_whose_model_cannot_be_rerun_in_float64_is_refused_in_one_line():
    import threading

    class Locked:  # cannot be copied, and comes from no file that could be loaded again
        def __init__(self):
            self.lock, self.W = threading.Lock(), np.ones((3, 3), dtype=np.float32)

        def forward(self, x):
            return x @ self.W

        def backward(self, d):
            self.dW = d
            return d @ self.W.T

    model = modelfile.from_object(Locked(), source="locked", input_shape=(2, 3))
    other = modelfile.from_object([Locked()], source="other")
    with pytest.raises(layerdiff.ModelFileError, match="^locked computes in float32, and dtype='native' judges it against a float64 rerun of it, but its model can be neither copied"):
        twins.run_pair(model, other, "native")
