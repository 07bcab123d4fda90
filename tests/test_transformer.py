"""The GPT fixture: the tiny NumPy and PyTorch decoders agree, and each bug variant is named at its layer."""

import ast
from pathlib import Path

import pytest

import layerdiff

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CLEAN = (FIXTURES / "gpt_numpy.py", FIXTURES / "gpt_torch.py")
VARIANTS = sorted(FIXTURES.glob("bug_gpt_*.py"))

def declared(path: Path) -> dict:
    """A variant's EXPECTED, read without running the file."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXPECTED" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} declares no EXPECTED")


@pytest.fixture(autouse=True)
def tiny(monkeypatch):
    monkeypatch.setenv("LAYERDIFF_GPT_SIZE", "tiny")


def test_clean_gpt_pair_agrees_at_every_layer_to_float64_rounding(shared_run):
    _, report = shared_run(*CLEAN, "--dtype", "float64")
    assert report["match"]
    assert report["forward"]["first_divergence"] is None and report["backward"]["first_divergence"] is None
    assert report["only_a"] == [] and report["only_b"] == []
    names = [layer["layer_a"] for layer in report["layers"]]
    assert {"wte", "wpe", "blocks.1.attn.sdpa", "blocks.1.mlp.gelu", "ln_f", "lm_head", "loss"} <= set(names)
    worst = max(t["max_abs"] for layer in report["layers"] for t in layer["tensors"])
    assert worst < 1e-12


def test_clean_gpt_pair_parameter_gradients_agree(shared_run):
    # The tapped NumPy network's parameters belong to no tap: they are compared on the torch module's row.
    _, report = shared_run(*CLEAN, "--dtype", "float64")
    grads = [t for layer in report["layers"] for t in layer["param_grads"]]
    assert len(grads) == 2 + 12 * 2 + 2  # wte (tied with lm_head), wpe, 12 per block, ln_f
    assert all(t["ok"] and t["max_rel"] < 1e-12 for t in grads)


def test_a_wrong_parameter_gradient_inside_a_tapped_network_is_found(tmp_path):
    path = tmp_path / "bug_c_fc_bias.py"
    path.write_text(
        "from gpt_numpy import *\n"
        "import gpt_numpy\n"
        "class NoBias(gpt_numpy.Linear):\n"
        "    def backward(self, dout):\n"
        "        dx = super().backward(dout)\n"
        "        self.grads['bias'][...] = 0.0\n"
        "        return dx\n"
        "model.blocks[1].mlp.c_fc.__class__ = NoBias\n"
    )
    import sys

    sys.path.insert(0, str(FIXTURES))
    try:
        report = layerdiff.run(path, CLEAN[1], out=tmp_path / "out").json()
    finally:
        sys.path.remove(str(FIXTURES))
    assert report["backward"]["first_divergence"]["layer_a"] == "blocks.1.mlp.c_fc"
    assert [(c["layer_a"], c["pass"]) for c in report["culprits"]] == [("blocks.1.mlp.c_fc", "param_grad")]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda p: p.stem)
def test_gpt_bug_variant_is_reported_at_its_layer_and_pass(shared_run, variant):
    want = declared(variant)
    _, report = shared_run(variant, FIXTURES / want["reference"], "--dtype", "float64")
    assert not report["match"]
    found = report[want["pass"]]["first_divergence"]
    assert found is not None and found["layer_a"] == want["layer"]
    if want["pass"] == "backward":
        assert report["forward"]["first_divergence"] is None


def test_every_gpt_bug_variant_declares_its_layer():
    assert len(VARIANTS) >= 4
    for variant in VARIANTS:
        assert {"pass", "layer", "reference"} <= set(declared(variant))
