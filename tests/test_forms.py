"""Networks in the forms their users write them (fixtures/forms/): each clean pair matches, each bug variant is named
at its layer only, and what layerdiff had to work out (a gate packing, a gradient found by shape, a weight change
taken as a gradient, a guessed layout) is said in the mapping."""

import json

import numpy as np
import pytest

import layerdiff

from conftest import FIXTURES, expected, one_error_line, write

FORMS = FIXTURES / "forms"
CLEAN = [
    ("lstm_numpy.py", "lstm_torch.py"),
    ("gru_numpy.py", "gru_torch.py"),
    ("rnn_numpy.py", "rnn_torch.py"),
    ("update_numpy.py", "update_torch.py"),
    ("grads_numpy.py", "grads_torch.py"),
    ("classifier_numpy.py", "classifier_torch.py"),
]
VARIANTS = ["bug_lstm_forget_bias", "bug_gru_reset_before", "bug_rnn_tanh_grad", "bug_update_bias_mean", "bug_loss_gradient_of_sum"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("forms")
    found = {}
    for a, b in CLEAN:
        found[a] = layerdiff.run(FORMS / a, FORMS / b, out=out / a).json()
    for name in VARIANTS:
        want = expected(FORMS / f"{name}.py")
        found[name] = layerdiff.run(FORMS / f"{name}.py", FORMS / want["reference"], out=out / name).json()
    return found


def links(report):
    return {w["a"]: w for w in report["weights"]["links"]}


@pytest.mark.parametrize("a", [a for a, _ in CLEAN])
def test_clean_pair_in_its_users_form_matches(reports, a):
    report = reports[a]
    assert report["match"] is True
    assert report["culprits"] == []


@pytest.mark.parametrize("name", VARIANTS)
def test_bug_variant_is_named_at_its_layer_only(reports, name):
    want, report = expected(FORMS / f"{name}.py"), reports[name]
    found = [(c["layer_a"], c["pass"]) for c in report["culprits"]]
    if "culprits" in want:
        assert found == [(c["layer"], c["pass"]) for c in want["culprits"]]
    else:
        assert {layer for layer, _ in found} == {want["layer"]}
        assert found[0][1] == want["pass"]
    if want.get("hint"):
        assert want["hint"] in " ".join(c["hint"] or "" for c in report["culprits"])


def test_lstm_gates_kept_per_gate_are_packed_as_pytorch_packs_them(reports):
    w = links(reports["lstm_numpy.py"])
    assert w["lstm.W{i,f,c,o}"]["b"] == "lstm.weight_ih_l0" and w["lstm.W{i,f,c,o}"]["transpose"] == (1, 0)
    assert w["lstm.U{i,f,c,o}"]["b"] == "lstm.weight_hh_l0"
    zero = next(l for l in reports["lstm_numpy.py"]["weights"]["links"] if l["b"] == "lstm.bias_hh_l0")
    assert zero["by"] == "zero" and "one bias" in zero["note"]


def test_the_head_after_a_wrong_lstm_is_right_given_the_forced_hidden_state(reports):
    # The head reads h, the LSTM's second output: forcing only the first would make it a culprit too.
    layers = {l["layer_a"]: l for l in reports["bug_lstm_forget_bias"]["layers"]}
    assert layers["head"]["verdicts"]["forward"] == "inherited"


def test_gru_blocks_in_keras_order_are_reordered(reports):
    w = links(reports["gru_numpy.py"])
    assert w["gru.kernel"]["b"] == "gru.weight_ih_l0" and "rzn from the file's zrn" in w["gru.kernel"]["note"]


def test_a_stateful_cell_runs_the_same_twice_and_its_square_weight_is_a_stated_guess(reports):
    # Lists of states, a step counter and += gradients never reach the second run; the run-to-run check passed.
    report = reports["rnn_numpy.py"]
    assert report["a"]["meta"]["run_to_run"] == 0.0
    note = links(report)["rnn.cell.W_hh"]["note"]
    assert "guessed 'in out'" in note and "layouts = {'rnn.cell.W_hh': 'in out'}" in note


def test_weights_made_on_the_first_forward_are_found(reports):
    assert {"rnn.cell.W_xh", "rnn.cell.W_hh", "rnn.cell.b_xh", "rnn.cell.b_hh"} <= set(links(reports["rnn_numpy.py"]))


def test_update_in_backward_gives_the_weight_change_as_the_gradient(reports):
    w = links(reports["update_numpy.py"])
    assert all("change of backward(dout, learning_rate=1)" in w[k]["note"] for k in ("0.weights", "0.bias", "2.weights"))


def test_gradients_under_other_names_are_found_and_one_by_shape_is_said(reports):
    w = links(reports["grads_numpy.py"])
    assert not w["fc1.W"]["note"] and w["fc1.W"]["transpose"] is None  # dLdW, layout declared "out in"
    assert not w["fc2.b"]["note"]  # dL_db
    assert "gradient from delta_W (by shape" in w["fc3.W"]["note"]


def test_a_loss_whose_gradient_is_the_sums_is_said(reports):
    feed = " ".join(reports["bug_loss_gradient_of_sum"]["feed"])
    assert "its gradient is that of the sum over the batch of 8 while its value is the mean" in feed
    assert "sum over the batch" not in " ".join(reports["grads_numpy.py"]["feed"])


def test_a_whole_model_finds_the_parameters_of_its_parts(reports):
    assert {"cells.0.weight", "cells.1.bias", "head.W", "head.b"} <= set(links(reports["classifier_numpy.py"]))


DENSE = (
    "import numpy as np\n"
    "class Dense:\n"
    "    def __init__(self):\n"
    "        self.W = np.linspace(-1, 1, 12).reshape(4, 3); self.b = np.zeros(3)\n"
    "    def forward(self, x): self.x = x; return x @ self.W + self.b\n"
)
TORCH = "import torch\nmodel = torch.nn.Linear(4, 3)\n"


def test_momentum_inside_backward_is_said(cli, tmp_path):
    write(tmp_path, "a.py", DENSE + (
        "    v = 0\n"
        "    def backward(self, dout, lr):\n"
        "        g = self.x.T @ dout; self.v = 0.9 * self.v + g; self.W -= lr * self.v; self.b -= lr * dout.sum(0)\n"
        "        return dout @ (self.W + lr * self.v).T\n"
        "model = [Dense()]\ninput_shape = (5, 4)\n"
    ))
    write(tmp_path, "b.py", TORCH)
    code, out, err = cli("run", "a.py", "b.py", "--json")
    assert code == 0, err
    note = json.loads(out)["weights"]["links"][0]["note"]
    assert "keeps state, such as momentum" in note


def test_an_adaptive_update_inside_backward_is_refused(cli, tmp_path):
    write(tmp_path, "a.py", DENSE + (
        "    def backward(self, dout, learning_rate):\n"
        "        g = self.x.T @ dout; self.W -= learning_rate * g / (np.abs(g) + 1e-8)\n"
        "        return dout @ self.W.T\n"
        "model = [Dense()]\ninput_shape = (5, 4)\n"
    ))
    write(tmp_path, "b.py", TORCH)
    code, _, err = cli("run", "a.py", "b.py")
    assert code == 2
    assert "updates 'W' by a rule other than plain SGD" in one_error_line(err)


def test_an_update_under_an_unknown_argument_name_offers_the_declaration(cli, tmp_path):
    write(tmp_path, "a.py", DENSE + (
        "    def backward(self, dout, step=0.1):\n"
        "        g = self.x.T @ dout; dx = dout @ self.W.T; self.W -= step * g; self.b -= step * dout.sum(0)\n"
        "        return dx\n"
        "model = [Dense()]\ninput_shape = (5, 4)\n"
    ))
    write(tmp_path, "b.py", TORCH)
    code, _, err = cli("run", "a.py", "b.py")
    assert code == 2
    assert 'update_in_backward = "learning_rate"' in one_error_line(err)
    write(tmp_path, "a.py", (tmp_path / "a.py").read_text() + 'update_in_backward = "step"\n')
    code, _, err = cli("run", "a.py", "b.py")
    assert code == 0, err


def test_two_arrays_of_a_parameters_shape_written_in_backward_are_an_error_naming_them(cli, tmp_path):
    write(tmp_path, "a.py", DENSE + (
        "    def backward(self, dout):\n"
        "        self.change = self.x.T @ dout; self.other = 2 * self.change; self.step = dout.sum(0)\n"
        "        return dout @ self.W.T\n"
        "model = [Dense()]\ninput_shape = (5, 4)\n"
    ))
    write(tmp_path, "b.py", TORCH)
    code, _, err = cli("run", "a.py", "b.py")
    assert code == 2
    line = one_error_line(err)
    assert "change, other all have its shape (4, 3)" in line and "grads_of" in line


def test_an_error_in_the_files_own_glue_is_the_files(cli, tmp_path):
    write(tmp_path, "a.py", DENSE + (
        "    def backward(self, dout): self.dW = self.x.T @ dout; self.db = dout.sum(0); return dout @ self.W.T\n"
        "model = [Dense()]\ninput_shape = (5, 4)\n"
        "def params_of(layer): return {'W': layer.weights}\n"
    ))
    write(tmp_path, "b.py", TORCH)
    code, _, err = cli("run", "a.py", "b.py")
    assert code == 2
    assert "a.py raised AttributeError" in one_error_line(err) and "in its params_of(Dense)" in one_error_line(err)
    assert 'File "a.py", line 9, in params_of' in err


def test_a_torch_file_layouts_are_honoured(tmp_path):
    from layerdiff import modelfile, runner

    write(tmp_path, "m.py", "import torch\nmodel = torch.nn.RNN(4, 4)\nlayouts = {'weight_hh_l0': 'in out'}\n")
    params = {p.name: p for p in runner.prepare(modelfile.load(tmp_path / "m.py"), "float64").parameters()}
    assert params["weight_hh_l0"].layout == "in out" and params["weight_ih_l0"].layout == "out in"


def test_a_declared_layout_the_values_contradict_is_said_in_the_hint(tmp_path):
    write(tmp_path, "wrong.py", (
        f"import sys; sys.path.insert(0, {str(FORMS)!r})\n"
        "from rnn_numpy import model, input_shape\n"
        "layouts = {'rnn.cell.W_hh': 'out in'}  # it is used as a_prev @ W_hh: 'in out'\n"
    ))
    report = layerdiff.run(tmp_path / "wrong.py", FORMS / "rnn_torch.py", out=tmp_path / "out").json()
    first = report["culprits"][0]
    assert (first["layer_a"], first["pass"]) == ("rnn", "forward")
    assert "rnn agrees when rnn.cell.W_hh is copied into rnn.weight_hh_l0 with its two axes swapped" in first["hint"]
    assert {c["layer_a"] for c in report["culprits"]} == {"rnn"}


def test_a_plain_dict_of_layers_is_a_network():
    from layerdiff.adapters.numpy import NumpyAdapter

    class Scale:
        def forward(self, x):
            return 2 * x

        def backward(self, d):
            return 2 * d

    assert NumpyAdapter().claims({"a": Scale(), "b": Scale()})
    assert layerdiff.compare_models({"a": Scale()}, [Scale()], input_shape=(2, 3)).match


def test_torch_forms_doctests():
    import doctest

    from layerdiff.adapters.torch import forms

    assert doctest.testmod(forms).failed == 0


def test_integer_inputs_are_fed_as_they_are_and_never_differentiated():
    import torch

    class Embed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)

        def forward(self, ids, mask):
            return self.emb(ids) * mask[..., None]

    ids = np.array([[1, 2, 3], [4, 5, 0]])
    mask = np.array([[True, True, False], [True, True, True]])
    result = layerdiff.compare_models(Embed(), Embed(), inputs={"ids": ids, "mask": mask})
    assert result.match
    assert "ids (2, 3) int64, mask (2, 3) bool" in " ".join(result.notes)


@pytest.mark.parametrize("line,says", [
    ("inputs = {'ids': object()}", "`inputs['ids']` in m.py holds object values, not numbers"),
    ("inputs = {'not a keyword': [1]}", "is a dict whose keys are not all keywords"),
    ("output = True", "`output` in m.py must name the part of the model's output"),
    ("gates = {'lstm': 'i f'}", "`gates` in m.py must map a layer to its gate order"),
    ("gates = {'fc': 'a b c d'}", "name the gates as PyTorch does"),
    ("gates = {'lstm': 'i f g o'}", "no parameter is under 'lstm'"),
    ("update_in_backward = 3", "must name the learning-rate argument"),
    ("layer_map = ['fc=head']", "`layer_map` in m.py must be a dict from names to names"),
    ("ignore = [3]", "`ignore` in m.py must be a glob or a list of globs"),
    ("loss = 'mse'", "`loss` in m.py is the string 'mse'"),
])
def test_a_bad_declaration_is_one_line_saying_what_to_write(cli, tmp_path, line, says):
    write(tmp_path, "m.py", DENSE + (
        "    def backward(self, dout): self.dW = self.x.T @ dout; self.db = dout.sum(0); return dout @ self.W.T\n"
        f"model = [Dense()]\ninput_shape = (5, 4)\n{line}\n"
    ))
    write(tmp_path, "b.py", TORCH)
    code, _, err = cli("run", "m.py", "b.py")
    assert code == 2 and says in one_error_line(err)


def test_inputs_by_keyword_to_a_model_called_by_position_are_refused(cli, tmp_path):
    write(tmp_path, "m.py", DENSE + (
        "    def backward(self, dout): self.dW = self.x.T @ dout; self.db = dout.sum(0); return dout @ self.W.T\n"
        "model = [Dense()]\ninputs = {'x': np.ones((5, 4))}\n"
    ))
    code, _, err = cli("run", "m.py", "m.py")
    assert code == 2 and "declare them as a list, `inputs = [...]`" in one_error_line(err)
