"""The Llama pair at its tiny size: Hugging Face's LlamaForCausalLM (from a config) against the NumPy decoder with a
hand-written backward agrees in float64 and in float32 (--dtype native), and each bug variant is reported at
exactly the layer and pass its EXPECTED declares. The 1B size is measured by benchmarks/llama.py, never here."""

import pytest

from conftest import FIXTURES, expected

pytest.importorskip("transformers")  # in the test extra: pip install -e '.[test]'

A, B = FIXTURES / "llama_numpy.py", FIXTURES / "llama_torch.py"
VARIANTS = sorted(FIXTURES.glob("bug_llama_*.py"))


def test_the_clean_pair_agrees_to_float64_noise(shared_run):
    code, report = shared_run(A, B, "--dtype", "float64")
    assert code == 0 and report["match"] is True
    assert report["forward"]["first_divergence"] is None and report["backward"]["first_divergence"] is None
    assert report["only_a"] == [] and report["only_b"] == []
    worst = max(t["max_abs"] for layer in report["layers"] for t in layer["tensors"] + layer["param_grads"])
    assert worst < 1e-10
    names = [l["layer_a"] for l in report["layers"]]
    # Lined up by Hugging Face's module paths, the attention core included (tapped on both sides).
    assert "model.layers.1.self_attn.attention" in names and names[-2:] == ["lm_head", "loss"]


def test_the_clean_pair_agrees_in_float32(shared_run):
    code, report = shared_run(A, B, "--dtype", "native")
    assert code == 0 and report["match"] is True
    assert report["forward"]["first_divergence"] is None and report["backward"]["first_divergence"] is None


def test_both_sides_build_the_same_weights_so_their_own_weights_agree(tmp_path):
    """llama_config.weights feeds both files: with --weights own (no copy) the pair still agrees, weights first."""
    import layerdiff

    report = layerdiff.run(A, B, out=tmp_path / "own", weights="own").json()
    assert report["match"] is True


def test_every_parameter_is_copied_by_name(shared_run):
    _, report = shared_run(A, B, "--dtype", "float64")
    links = report["weights"]["links"]
    assert len(links) == 20 and all(link["a"] == link["b"] for link in links)  # tied head: the embedding once


def test_there_are_llama_bug_variants_of_both_passes():
    assert {expected(v)["pass"] for v in VARIANTS} == {"forward", "backward"}


def test_the_1b_config_has_about_a_billion_parameters_as_hugging_face_counts_them(monkeypatch):
    """Built on the meta device (shapes, no storage): the count, not the memory, is what is checked."""
    import torch

    monkeypatch.syspath_prepend(str(FIXTURES))

    import llama_config
    import llama_torch

    big = llama_config.SIZES["1b"]
    with torch.device("meta"):
        model = llama_torch.build(big, copy_weights=False)  # drawing a billion numbers for meta tensors: no
    assert sum(p.numel() for p in model.parameters()) == big.n_params() == 1_038_682_112
