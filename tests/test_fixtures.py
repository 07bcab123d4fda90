"""Every clean pair agrees; every bug variant is reported at exactly its declared pass and layer."""

import pytest

from conftest import CLEAN_PAIRS, FIXTURES, bug_variants, expected


@pytest.mark.parametrize("dtype", ["float64", "native"])
@pytest.mark.parametrize("a,b", CLEAN_PAIRS)
def test_clean_pair_reports_no_divergence(shared_run, a, b, dtype):
    code, report = shared_run(FIXTURES / a, FIXTURES / b, "--dtype", dtype)
    assert code == 0
    assert report["match"] is True
    assert report["forward"]["first_divergence"] is None
    assert report["backward"]["first_divergence"] is None
    assert report["only_a"] == [] and report["only_b"] == []


@pytest.mark.parametrize("a,b", CLEAN_PAIRS)
def test_clean_pair_in_float64_agrees_to_1e_10(shared_run, a, b):
    _, report = shared_run(FIXTURES / a, FIXTURES / b, "--dtype", "float64")
    worst = max(t["max_abs"] for layer in report["layers"] for t in layer["tensors"] + layer["param_grads"])
    assert worst < 1e-10


@pytest.mark.parametrize("variant", bug_variants(), ids=lambda p: p.stem)
def test_bug_variant_is_reported_at_its_layer_and_pass(shared_run, variant):
    want = expected(variant)
    code, report = shared_run(variant, FIXTURES / want["reference"], "--dtype", "float64")
    assert code == 1
    found = report[want["pass"]]["first_divergence"]
    assert found is not None and found["layer_a"] == want["layer"]
    if want["pass"] == "backward":
        assert report["forward"]["first_divergence"] is None


def test_there_are_bug_variants_of_both_passes():
    passes = [expected(v)["pass"] for v in bug_variants()]
    assert len(passes) >= 8 and {"forward", "backward"} <= set(passes)
