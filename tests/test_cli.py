"""The CLI's exit codes and its one-line errors for bad input, with nothing half written."""

import json

import h5py
import pytest
import numpy as np

from conftest import FIXTURES, one_error_line, write

MLP, MLP_TORCH = FIXTURES / "mlp_numpy.py", FIXTURES / "mlp_torch.py"


def test_match_exits_0_and_prints_the_report(cli):
    code, out, _ = cli("run", MLP, MLP_TORCH, "-o", "out")
    assert code == 0
    assert "fc1.W (16, 32) -> fc1.weight (32, 16)  transposed" in out
    assert "forward  no divergence" in out and "backward no divergence" in out
    assert "out/mlp_numpy.h5" in out and "result: the same within tolerance" in out


def test_divergence_exits_1_and_names_the_layer(cli):
    code, out, _ = cli("run", FIXTURES / "bug_transposed_weight.py", MLP_TORCH)
    assert code == 1
    assert "first divergence at fc2 (counted from the input)" in " ".join(out.split())


def test_second_run_writes_a_new_folder_instead_of_overwriting(cli, tmp_path):
    cli("run", MLP, MLP_TORCH)
    cli("run", MLP, MLP_TORCH)
    assert sorted(p.name for p in (tmp_path / "layerdiff-out").iterdir()) == ["run-1", "run-2"]


def test_missing_file(cli):
    code, _, err = cli("run", "nope.py", MLP_TORCH)
    assert code == 2
    assert "nope.py: no such file" in one_error_line(err)


def test_file_that_defines_no_model(cli, tmp_path):
    write(tmp_path, "empty.py", "x = 1\n")
    code, _, err = cli("run", "empty.py", MLP_TORCH)
    assert code == 2
    assert "empty.py defines no model" in one_error_line(err)


def test_script_that_raises_shows_the_users_traceback(cli, tmp_path):
    write(tmp_path, "broken.py", "import numpy as np\n\ndef build():\n    return np.zeros(3) @ np.zeros(4)\n\nmodel = build()\n")
    code, _, err = cli("run", "broken.py", MLP_TORCH)
    assert code == 2
    assert 'File "' in err and "broken.py\", line 4, in build" in err
    assert "layerdiff" not in err.split("error:")[0]  # none of our frames
    assert "broken.py raised ValueError" in one_error_line(err)


def test_layers_that_cannot_be_mapped(cli):
    code, _, err = cli("run", MLP, FIXTURES / "cnn_torch.py")
    assert code == 2
    assert "Cannot map parameters: mlp_numpy.py has 8 parameter tensors, cnn_torch.py has 6" in one_error_line(err)


def test_shapes_that_cannot_be_mapped(cli, tmp_path):
    write(tmp_path, "wide.py", "import torch\nmodel = torch.nn.Linear(16, 5)\ninput_shape = (2, 16)\n")
    write(tmp_path, "narrow.py", "import torch\nmodel = torch.nn.Linear(16, 4)\n")
    code, _, err = cli("run", "wide.py", "narrow.py")
    assert code == 2
    assert "Cannot map parameter weight (5, 16) of wide.py onto weight (4, 16) of narrow.py" in one_error_line(err)


def test_loss_on_one_side_only(cli, tmp_path):
    write(tmp_path, "noloss.py", "import torch\nmodel = torch.nn.Linear(16, 4)\ninput_shape = (2, 16)\n")
    write(tmp_path, "loss.py", "import torch\nmodel = torch.nn.Linear(16, 4)\nloss = torch.nn.MSELoss()\n")
    code, _, err = cli("run", "noloss.py", "loss.py")
    assert code == 2
    assert "loss.py defines a loss but noloss.py does not" in one_error_line(err)


def test_dropout_left_on_is_reported_not_compared(cli):
    code, _, err = cli("run", FIXTURES / "dropout_numpy.py", MLP_TORCH)
    assert code == 2
    assert "dropout_numpy.py is not deterministic: layer 'drop1'" in one_error_line(err)


def test_existing_output_is_refused_and_kept(cli, tmp_path):
    cli("run", MLP, MLP_TORCH, "-o", "out")
    before = (tmp_path / "out" / "mlp_numpy.h5").read_bytes()
    code, _, err = cli("run", MLP, MLP_TORCH, "-o", "out")
    assert code == 2
    assert "out/mlp_numpy.h5 exists. Pass --force" in one_error_line(err)
    assert (tmp_path / "out" / "mlp_numpy.h5").read_bytes() == before
    assert cli("run", MLP, MLP_TORCH, "-o", "out", "--force")[0] == 0


def test_not_a_dump(cli, tmp_path):
    (tmp_path / "x.h5").write_bytes(b"not hdf5 at all")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.zeros(3)
    assert "x.h5: no such file" not in cli("show", "x.h5")[2]
    code, _, err = cli("show", "x.h5")
    assert code == 2 and "x.h5 is not an HDF5 file" in one_error_line(err)
    code, _, err = cli("show", "other.h5")
    assert code == 2 and "other.h5 is an HDF5 file but not a layerdiff dump" in one_error_line(err)


def test_dump_of_another_schema_version(cli, tmp_path):
    cli("dump", MLP, "-o", "a.h5")
    with h5py.File(tmp_path / "a.h5", "a") as f:
        f.attrs["layerdiff_schema"] = 99
    code, _, err = cli("compare", "a.h5", "a.h5")
    assert code == 2
    assert "a.h5 has dump schema 99; this layerdiff reads schemas 1, 2" in one_error_line(err)


def test_dumps_made_with_different_weights_are_refused(cli):
    cli("dump", MLP, "-o", "a.h5")
    cli("dump", MLP_TORCH, "-o", "b.h5")
    code, _, err = cli("compare", "a.h5", "b.h5")
    assert code == 2
    assert "were made with different weights" in one_error_line(err)
    assert cli("compare", "a.h5", "b.h5", "--force")[0] == 1


def test_dump_with_weights_from_another_dump_compares(cli):
    cli("dump", MLP, "-o", "a.h5")
    assert cli("dump", MLP_TORCH, "-o", "b.h5", "--weights-from", "a.h5")[0] == 0
    code, out, _ = cli("compare", "a.h5", "b.h5", "--json")
    assert code == 0 and json.loads(out)["match"] is True


def test_golden_dump_against_a_script(cli):
    cli("dump", MLP, "-o", "golden.h5")
    assert cli("compare", "golden.h5", MLP_TORCH)[0] == 0
    assert cli("compare", MLP_TORCH, "golden.h5")[0] == 0
    code, out, _ = cli("compare", "golden.h5", FIXTURES / "bug_missing_bias_grad.py", "--json")
    assert code == 1 and json.loads(out)["backward"]["first_divergence"]["layer_b"] == "fc3"


def test_bad_map_option(cli):
    code, _, err = cli("run", MLP, MLP_TORCH, "--map", "fc1")
    assert code == 2 and "'fc1' is not NAME_A=NAME_B" in err


def test_map_naming_a_missing_layer(cli):
    code, _, err = cli("run", MLP, MLP_TORCH, "--map", "fc9=fc1")
    assert code == 2 and "--map names layer 'fc9', which mlp_numpy.py does not have" in one_error_line(err)


def test_json_has_the_documented_fields(run_json):
    _, report = run_json(FIXTURES / "bug_sigmoid_grad_preactivation.py", MLP_TORCH)
    assert report["schema"] == 1 and report["match"] is False
    assert report["forward"]["first_divergence"] is None
    assert {"layer_a", "layer_b"} <= set(report["backward"]["first_divergence"])
    assert [l["layer_a"] for l in report["layers"]] == ["fc1", "relu1", "fc2", "sig2", "fc3", "tanh3", "fc4", "loss"]


def test_show_lists_layers_and_parameters(cli):
    cli("dump", FIXTURES / "cnn_numpy.py", "-o", "c.h5")
    code, out, _ = cli("show", "c.h5")
    assert code == 0
    assert "conv1 (Conv2D): input (4, 3, 8, 8), output (4, 8, 8, 8)" in out
    assert "conv1.weights (8, 3, 3, 3) O I H W (guessed)" in out


def test_a_damaged_dump_is_one_line_not_a_crash(cli, tmp_path):
    with h5py.File(tmp_path / "fake.h5", "w") as f:
        f.attrs["layerdiff_schema"] = 1
        f.create_group("params")
        g = f.create_group("layers").create_group("0000_x")
        g.attrs.update(name="x", kind="k", params="[]")
        g["output"] = np.zeros(3)  # no summary attributes
    code, _, err = cli("show", "fake.h5")
    assert code == 2 and "fake.h5 is a damaged layerdiff dump" in one_error_line(err)


def test_a_bug_in_layerdiff_exits_3_with_its_traceback(cli, monkeypatch):
    from layerdiff import api

    def broken(*args, **kwargs):
        raise ZeroDivisionError("inside layerdiff")

    monkeypatch.setattr(api, "run", broken)
    code, _, err = cli("run", MLP, MLP_TORCH)
    assert code == 3
    assert "ZeroDivisionError: inside layerdiff" in err and "a bug in layerdiff" in err


def test_a_model_recording_no_layers_is_told_to_tap(cli, tmp_path):
    write(tmp_path, "untapped.py", (
        "import jax.numpy as jnp\n"
        "def apply(params, x):\n"
        "    return jnp.tanh(x @ params['fc']['W'])\n"
        "model = (apply, {'fc': {'W': jnp.ones((4, 3))}})\n"
        "input_shape = (2, 4)\n"
    ))
    write(tmp_path, "ref.py", "import torch\nmodel = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.Tanh())\n")
    code, _, err = cli("run", "ref.py", "untapped.py")
    assert code == 2
    assert "untapped.py records no layers. Mark values in its forward pass with layerdiff.tap" in one_error_line(err)


def test_parameters_changed_during_an_iteration_are_named(cli, tmp_path):
    write(tmp_path, "sgd_inside.py", (
        "import numpy as np\n"
        "class Dense:\n"
        "    def __init__(self): self.W = np.full((4, 3), 0.1); self.b = np.zeros(3)\n"
        "    def forward(self, x): self.x = x; return x @ self.W + self.b\n"
        "    def backward(self, d):\n"
        "        self.dW = self.x.T @ d; self.db = d.sum(0)\n"
        "        self.W -= 0.1 * self.dW  # the update, inside backward\n"
        "        return d @ self.W.T\n"
        "model = [Dense()]\ninput_shape = (2, 4)\n"
    ))
    write(tmp_path, "ref.py", "import torch\nmodel = torch.nn.Linear(4, 3)\n")
    code, _, err = cli("run", "sgd_inside.py", "ref.py")
    assert code == 2
    assert "sgd_inside.py changes its parameters during an iteration: layer '0' writes into its weights in backward" in one_error_line(err)


def test_errors_name_options_as_the_caller_wrote_them(cli, tmp_path):
    import layerdiff

    code, _, err = cli("run", FIXTURES / "mlp_numpy.py", FIXTURES / "mlp_torch.py", "--map", "fc9=fc1")
    assert code == 2 and "--map names layer 'fc9'" in one_error_line(err)
    with pytest.raises(layerdiff.AlignmentError, match=r"^layer_map= names layer 'fc9'"):
        layerdiff.run(FIXTURES / "mlp_numpy.py", FIXTURES / "mlp_torch.py", out=tmp_path / "api", layer_map={"fc9": "fc1"})
    with pytest.raises(layerdiff.ModelFileError, match=r"^dtype= must be one of float64, native"):
        layerdiff.run(FIXTURES / "mlp_numpy.py", FIXTURES / "mlp_torch.py", out=tmp_path / "api2", dtype="half")
