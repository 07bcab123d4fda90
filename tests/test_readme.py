"""The README says what the code does: its test command is CI's, its custom-layer test is a real test, and its
JSON example has the fields a real report has."""

import json
from pathlib import Path

from conftest import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_after(marker: str, language: str) -> str:
    return README.split(marker, 1)[1].split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_readme_test_command_is_what_ci_runs():
    ci = [l for l in (ROOT / ".ci" / "run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    command = block[block.index(next(l for l in block if l.startswith("# Install the test dependencies"))) + 1]
    assert ci == [command]


def test_readme_custom_layer_test_is_the_one_in_tests():
    block = code_after("A custom layer checked against its reference", "python")
    assert block == (ROOT / "tests" / "test_custom_layer.py").read_text()
    assert len(block.splitlines()) < 15


def test_readme_json_example_has_the_fields_of_a_real_report(run_json):
    _, report = run_json(FIXTURES / "bug_sigmoid_grad_preactivation.py", FIXTURES / "mlp_numpy.py")
    example = json.loads(code_after("<!-- json-schema -->", "json"))
    assert set(example) == set(report) and example["schema"] == report["schema"] == 1
    assert set(example["culprits"][0]) == set(report["culprits"][0])
    assert set(example["backward"]["first_divergence"]) == set(report["backward"]["first_divergence"])
    layer = next(l for l in report["layers"] if l["param_grads"])
    assert set(example["layers"][0]) == set(layer)
    assert set(example["layers"][0]["tensors"][0]) == set(layer["tensors"][0])
    assert set(example["weights"]["links"][0]) == set(report["weights"]["links"][0])


def test_readme_model_file_examples_run_against_their_reference(cli, tmp_path):
    numpy_net = code_after("**NumPy, layer list**", "python")
    (tmp_path / "mine.py").write_text(numpy_net)
    (tmp_path / "ref.py").write_text(
        "import torch.nn as nn\nmodel = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))\n"
    )
    code, out, err = cli("run", "mine.py", "ref.py", "--json")
    assert code == 0, out + err
    assert [l["layer_a"] for l in json.loads(out)["layers"]] == ["fc1", "relu", "fc2"]
    (tmp_path / "conv.py").write_text(code_after("**PyTorch**: a module-level", "python") + "input_shape = (2, 3, 8, 8)\ntargets = [1, 2]\n")
    assert cli("dump", "conv.py", "-o", "conv.h5")[0] == 0


def test_readme_update_in_backward_example_runs_against_its_reference(cli, tmp_path):
    (tmp_path / "mine.py").write_text(code_after("A NumPy layer whose backward updates its weights", "python"))
    (tmp_path / "ref.py").write_text("import torch.nn as nn\nmodel = nn.Sequential(nn.Linear(6, 12), nn.Linear(12, 3))\n")
    code, out, err = cli("run", "mine.py", "ref.py", "--json")
    assert code == 0, out + err
    assert all("change of backward(dout, learning_rate=1)" in w["note"] for w in json.loads(out)["weights"]["links"])


def test_readme_demo_output_is_what_the_demo_prints(cli):
    demo = README.split("The demo prints:\n\n```\n", 1)[1].split("```", 1)[0]
    code, out, _ = cli("run", FIXTURES / "bug_maxpool_grad_wrong_position.py", FIXTURES / "cnn_torch.py")
    assert code == 1

    def summary(text: str) -> list[str]:
        # The verdict, culprits, hints and first divergences: what a reader acts on (table digits at 1e-16 may
        # differ between BLAS builds, the versions in the header between installs).
        lines = [l.rstrip() for l in text.splitlines()]
        return lines[lines.index("result: they diverge, 1 culprit") : lines.index("forward, from the input")]

    assert summary(out) == summary(demo)


def shown_segments(marker: str) -> list[list[str]]:
    """The output block after ``marker``, cut into the segments it shows between its "…" lines."""
    segments: list[list[str]] = [[]]
    for line in code_after(marker, "").splitlines():
        if line == "…":
            segments.append([])
        else:
            segments[-1].append(line)
    return [s for s in segments if s]


def assert_shown(segments: list[list[str]], out: str) -> None:
    lines = [l.rstrip() for l in out.splitlines()]
    for segment in segments:
        starts = [k for k, l in enumerate(lines) if l == segment[0]]
        assert any(lines[k : k + len(segment)] == segment for k in starts), "\n".join(segment)


def test_readme_precision_examples_are_what_they_print(cli):
    code, out, _ = cli("run", FIXTURES / "mlp_numpy.py", FIXTURES / "precision" / "bug_bf16_scaled.py", "--dtype", "native")
    summary = shown_segments("--dtype native   # exit 1: fc3, in bfloat16\n```\n")[0]
    assert code == 1
    assert_shown([summary[2:]], out)  # the verdict, culprits and first divergences (the header's versions vary)
    code, out, _ = cli("run", FIXTURES / "precision" / "rmsnorm_torch.py", FIXTURES / "precision" / "bug_f16_rmsnorm_overflow.py",
                       "--dtype", "native", "-o", "overflow")
    assert code == 1
    assert_shown(shown_segments("(`fixtures/precision/bug_f16_rmsnorm_overflow.py`):\n"), out)


def test_readme_weights_example_is_what_it_prints(cli):
    code, out, _ = cli("run", FIXTURES / "weights" / "lstm_numpy.py", FIXTURES / "weights" / "bug_lstm_gate_order.py", "--weights", "own")
    assert code == 1
    segments = shown_segments("--weights own     # exit 1\n```\n")
    assert_shown([segments[0][2:]] + segments[1:], out)
def test_readme_placement_examples_are_what_the_runs_print(cli):
    # Each example of where culprits are placed, entry by entry (a culprit, note, zoom or hint with its wrapped
    # lines): the same words as a real run prints, whatever the width it wraps at.
    section = README.split("A layer's local error is its own only", 1)[1].split("## The model file", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```\n$ layerdiff run ")[1:]]
    assert len(blocks) >= 5
    for block in blocks:
        command, *lines = block.splitlines()
        _, out, _ = cli("run", *(ROOT / f for f in command.split()))
        printed = " ".join(out.split())
        entries = [[]]
        for line in lines:
            if not line.startswith(" ") and entries[-1]:
                entries.append([])
            entries[-1].append(line)
        for entry in entries:
            assert " ".join(" ".join(entry).split()) in printed, entry
