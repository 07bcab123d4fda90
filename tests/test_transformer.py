"""The GPT fixture: the tiny NumPy and PyTorch decoders agree, and each bug variant is named at its layer."""

import ast
from pathlib import Path

import numpy as np
import pytest

import layerdiff
from layerdiff import store

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CLEAN = (FIXTURES / "gpt_numpy.py", FIXTURES / "gpt_torch.py")
VARIANTS = sorted(FIXTURES.glob("bug_gpt_*.py"))

# nn.Embedding takes integer ids, which cannot require grad; PyTorch then warns that the full backward hook
# layerdiff puts on every leaf module fires on the module's outputs only. The recorded values are right.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def declared(path: Path) -> dict:
    """A variant's EXPECTED, read without running the file."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXPECTED" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} declares no EXPECTED")


@pytest.fixture(autouse=True)
def tiny(monkeypatch):
    monkeypatch.setenv("LAYERDIFF_GPT_SIZE", "tiny")


def test_clean_gpt_pair_agrees_at_every_layer_to_float64_rounding(tmp_path):
    result = layerdiff.run(*CLEAN, out=tmp_path)
    report = result.json()
    assert result.match
    assert report["forward"]["first_divergence"] is None and report["backward"]["first_divergence"] is None
    assert report["only_a"] == [] and report["only_b"] == []
    names = [layer["layer_a"] for layer in report["layers"]]
    assert {"wte", "wpe", "blocks.1.attn.sdpa", "blocks.1.mlp.gelu", "ln_f", "lm_head", "loss"} <= set(names)
    worst = max(t["max_abs"] for layer in report["layers"] for t in layer["tensors"])
    assert worst < 1e-12


def test_clean_gpt_pair_parameter_gradients_agree(tmp_path):
    # layerdiff attaches no parameters to tapped layers, so its report leaves these out: compare the dumps.
    result = layerdiff.run(*CLEAN, out=tmp_path)
    assert result.links is not None and len(result.links) == 2 + 12 * 2 + 2
    with store.Dump(result.dumps[0]) as a, store.Dump(result.dumps[1]) as b:
        for link in result.links:
            ga, gb = link.apply(a.param(link.src).grad), b.param(link.dst).grad
            assert np.abs(ga - gb).max() <= 1e-12 * np.abs(gb).max(), link.describe()


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda p: p.stem)
def test_gpt_bug_variant_is_reported_at_its_layer_and_pass(tmp_path, variant):
    want = declared(variant)
    result = layerdiff.run(variant, FIXTURES / want["reference"], out=tmp_path)
    report = result.json()
    assert not result.match
    found = report[want["pass"]]["first_divergence"]
    assert found is not None and found["layer_a"] == want["layer"]
    if want["pass"] == "backward":
        assert report["forward"]["first_divergence"] is None


def test_every_gpt_bug_variant_declares_its_layer():
    assert len(VARIANTS) >= 4
    for variant in VARIANTS:
        assert set(declared(variant)) == {"pass", "layer", "reference"}
