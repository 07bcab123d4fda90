"""Training steps: each multi-step bug variant (``fixtures/steps_bug_*.py``) is named at exactly its declared step,
part (a layer, the optimizer, a buffer), parameter or buffer, and state entry; clean pairs part at no step."""

import json
import runpy
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import layerdiff
from layerdiff.cli import main

from conftest import FIXTURES

VARIANTS = sorted(FIXTURES.glob("steps_bug_*.py"))


def expected(path: Path) -> dict:
    sys.path.insert(0, str(path.parent))
    try:
        return runpy.run_path(str(path))["EXPECTED"]
    finally:
        sys.path.remove(str(path.parent))


def run_steps(tmp: Path, a: Path, b: Path, *options: str) -> tuple[int, dict, str]:
    result = CliRunner().invoke(main, ["run", str(a), str(b), "--json", "-o", str(tmp), *options], catch_exceptions=False)
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout), result.stderr


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda p: p.stem)
def variant(request, tmp_path_factory):
    want = expected(request.param)
    code, report, _ = run_steps(tmp_path_factory.mktemp("steps"), request.param, FIXTURES / want["reference"], "--steps", str(want["steps"]))
    return want, code, report


def test_there_are_variants_of_each_part():
    parts = {expected(v)["part"] for v in VARIANTS}
    assert parts == {"layer", "optimizer", "buffer"} and len(VARIANTS) >= 6


def test_variant_parts_at_its_step(variant):
    want, code, report = variant
    assert code == 1 and report["match"] is False
    assert report["parted"] == want["step"]
    assert [s["step"] for s in report["steps"]] == list(range(1, want["step"] + 1))  # re-synced: it stops there
    assert all(s["layers_match"] and not s["culprits"] for s in report["steps"][:-1])


def test_variant_names_its_part_and_place(variant):
    want, _, report = variant
    first = report["culprits"][0]
    assert first["part"] == want["part"] and first["step"] == want["step"]
    if want["part"] == "layer":
        assert first["layer_a"] == want["where"] and first["pass"] == want["pass"]
    else:
        assert first["name_a"] == want["where"]
        assert not any(c["part"] == "layer" for c in report["culprits"])  # every layer agrees: it is not one of them


def test_variant_says_which_state_entry_differs(variant):
    want, _, report = variant
    if want["part"] != "optimizer":
        return
    step = report["steps"][-1]
    param = report["culprits"][0]["name_a"]
    differing = {t["key"].rsplit(": ", 1)[1] for t in step["state"] if t["key"].startswith(f"{param} ~") and not t["ok"]}
    assert differing == set(want["differs"])
    agreeing = [e for e in ("exp_avg", "exp_avg_sq", "step", "momentum_buffer") if e in report["culprits"][0]["state"]]
    assert agreeing, report["culprits"][0]["state"]


def test_variant_hint_says_what_went_wrong(variant):
    want, _, report = variant
    hint = report["culprits"][0]["hint"]
    if want["hint"] is not None:
        assert hint is not None and want["hint"] in hint


CLEAN = [
    ("steps_adam_numpy.py", "steps_adam_torch.py", 10),
    ("norm_numpy.py", "norm_torch.py", 5),  # plain SGD, batch-norm running statistics compared as buffers
    ("steps_adamw_jax.py", "steps_adamw_torch.py", 4),  # optax's mu, nu and count against torch's state
    ("steps_rnn_numpy.py", "steps_rnn_torch.py", 4),
]


@pytest.mark.parametrize("a,b,steps", CLEAN, ids=lambda x: str(x))
def test_clean_pair_parts_at_no_step(tmp_path, a, b, steps):
    if "jax" in a:
        pytest.importorskip("optax")
    code, report, _ = run_steps(tmp_path, FIXTURES / a, FIXTURES / b, "--steps", str(steps))
    assert code == 0 and report["match"] is True and report["parted"] is None
    assert len(report["steps"]) == steps and report["culprits"] == []
    assert all(t["ok"] for s in report["steps"] for t in s["updates"] + s["state"] + s["buffers"])
    assert all(s["updates"] for s in report["steps"])  # every step's updates were compared


def test_clean_pair_compares_the_state_and_the_buffers(tmp_path):
    _, report, _ = run_steps(tmp_path, FIXTURES / "norm_numpy.py", FIXTURES / "norm_torch.py", "--steps", "2")
    keys = {t["key"] for t in report["steps"][1]["buffers"]}
    assert keys == {"bn2.running_mean ~ bn2.running_mean", "bn2.running_var ~ bn2.running_var"}
    _, report, _ = run_steps(tmp_path / "adam", FIXTURES / "steps_adam_numpy.py", FIXTURES / "steps_adam_torch.py", "--steps", "2")
    entries = {t["key"].rsplit(": ", 1)[1] for t in report["steps"][1]["state"]}
    assert entries == {"exp_avg", "exp_avg_sq", "step"}


def test_free_running_clean_pair_parts_at_no_step(tmp_path):
    code, report, _ = run_steps(tmp_path, FIXTURES / "steps_adam_numpy.py", FIXTURES / "steps_adam_torch.py", "--steps", "10", "--free-running")
    assert code == 0 and report["mode"] == "free-running" and len(report["steps"]) == 10


def test_free_running_names_the_first_step_and_layer_and_goes_on(tmp_path):
    code, report, _ = run_steps(tmp_path, FIXTURES / "steps_bug_rnn_carried_state.py", FIXTURES / "steps_rnn_torch.py",
                                "--steps", "4", "--free-running")
    assert code == 1 and report["parted"] == 2 and len(report["steps"]) == 4
    assert report["layers"]["forward"]["first_divergence"]["layer_a"] == "rnn"
    assert report["culprits"][0]["layer_a"] == "rnn" and report["culprits"][0]["pass"] == "forward"
    assert [s["layers_match"] for s in report["steps"]] == [True, False, False, False]


def test_free_running_an_optimizer_bug_shows_in_the_next_steps_layers(tmp_path):
    code, report, _ = run_steps(tmp_path, FIXTURES / "steps_bug_adam_no_bias_correction.py", FIXTURES / "steps_adam_torch.py",
                                "--steps", "3", "--free-running")
    assert code == 1 and report["parted"] == 2  # step 1's weights moved apart; step 2's forward shows it
    assert not report["steps"][0]["updates"][0]["ok"] and report["steps"][0]["layers_match"]


def test_another_momentum_convention_is_not_a_culprit(tmp_path):
    """cs231n's velocity is -lr times PyTorch's buffer: the same steps, another state. Said, never blamed."""
    (tmp_path / "velocity.py").write_text(
        f"import sys; sys.path.insert(0, {str(FIXTURES)!r})\n"
        "from mlp_numpy import MLP, SoftmaxCrossEntropy, input_shape, targets\n"
        "from steps_optim_numpy import VelocityMomentum\n"
        "model, loss = MLP(), SoftmaxCrossEntropy()\n"
        "optimizer = VelocityMomentum(model, lr=0.01, momentum=0.99)\n"
    )
    code, report, _ = run_steps(tmp_path / "out", tmp_path / "velocity.py", FIXTURES / "steps_momentum_torch.py", "--steps", "4")
    assert code == 0 and report["match"] is True
    assert any("momentum_buffer" in n and "not re-synced" in n for n in report["notes"])


def test_python_api_takes_steps(tmp_path):
    result = layerdiff.run(FIXTURES / "steps_bug_momentum.py", FIXTURES / "steps_momentum_torch.py", out=tmp_path, steps=3)
    assert result.training.parted == 2 and not result.match
    assert "they part at step 2 of 3 (re-synced): the optimizer" in str(result)


def test_free_running_drift_from_rounding_is_not_a_parting(tmp_path):
    """Adam turns the rounding-noise gradient of a bias before a batch norm into steps of ~1e-11 of the weights:
    free-running, the two sides drift apart that much, which is said, not called a parting."""
    # Each file builds its own model: the fixtures' modules stay imported between runs, with the models they built.
    for name, text in (("a.py", "from norm_numpy import *\nfrom steps_optim_numpy import Adam\nmodel = NormMLP()\noptimizer = Adam(model)\n"),
                       ("b.py", "import torch\nfrom norm_torch import *\nmodel = NormMLP()\noptimizer = torch.optim.Adam(model.parameters())\n")):
        (tmp_path / name).write_text(f"import sys; sys.path.insert(0, {str(FIXTURES)!r})\n" + text)
    code, report, _ = run_steps(tmp_path / "out", tmp_path / "a.py", tmp_path / "b.py", "--steps", "4", "--free-running")
    assert code == 0 and report["match"] is True
    assert any(s["drift"] for s in report["steps"]) and any("drift apart" in n for n in report["notes"])
    assert max(s["weights"] for s in report["steps"]) < 1e-6
    code, report, _ = run_steps(tmp_path / "out2", tmp_path / "a.py", tmp_path / "b.py", "--steps", "4")
    assert code == 0 and not any(s["drift"] for s in report["steps"])  # re-synced: the same footing, no drift


def test_readme_training_steps_output_is_what_the_run_prints(cli):
    readme = (FIXTURES.parent / "README.md").read_text()
    shown = readme.split("--steps 3   # exit 1\n```\n\n```\n", 1)[1].split("```", 1)[0]
    code, out, _ = cli("run", FIXTURES / "steps_bug_adam_no_bias_correction.py", FIXTURES / "steps_adam_torch.py", "--steps", "3")

    def summary(text: str) -> list[str]:
        lines = [" ".join(l.split()) for l in text.splitlines()]
        return [l for l in lines if not l.startswith(("dump:", "layerdiff a:", "b:"))]

    assert code == 1 and summary(out) == summary(shown)
