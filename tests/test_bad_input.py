"""Every bad input a user (or an attacker) can give the CLI is one line on stderr and exit 2: never layerdiff's
traceback (exit 3), never a result (exit 0 or 1) computed from nonsense.

Each case writes what it needs into a fresh folder: ``good.py`` (a one-layer NumPy network, no loss), ``bad.py``
(``good.py`` with the case's declarations, or a file of its own), ``good.h5`` (a dump of ``good.py``) when the
arguments name it.
"""

import pytest

from conftest import one_error_line, write

NET = '''import numpy as np

class Dense:
    def __init__(self):
        self.params = {"W": np.random.default_rng(0).standard_normal((4, 3)), "b": np.zeros(3)}

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, d):
        self.grads = {"W": self.x.T @ d, "b": d.sum(0)}
        return d @ self.params["W"].T

model = [Dense()]
'''
GOOD = NET + "input_shape = (2, 4)\n"
LOSS = '''
def loss(logits, targets):
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = p.copy()
    d[np.arange(len(targets)), targets] -= 1
    return float(-np.log(p[np.arange(len(targets)), targets]).mean()), d / len(targets)
targets = np.array([0, 2])
'''
RUN = ("run", "bad.py", "good.py")

# (id, bad.py: declarations after NET, or "=" and a whole file; the arguments; what the error line says)
CASES = [
    # what a model file declares
    ("input_shape_words", 'input_shape = "eight by sixteen"', RUN, "`input_shape` in bad.py must be a tuple of whole numbers"),
    ("input_shape_huge", "input_shape = (10**12, 16)", RUN, "more than this machine's"),
    ("input_shape_fraction", "input_shape = (8.5, 4)", RUN, "where 8.5 is not a whole number"),
    ("input_shape_negative", "input_shape = (2, -4)", RUN, "has a non-positive dimension"),
    ("input_shape_zero", "input_shape = (0, 4)", RUN, "has a non-positive dimension"),
    ("input_shape_int", "input_shape = 4", RUN, "must be a tuple of whole numbers"),
    ("input_shape_bool", "input_shape = (True, 4)", RUN, "where True is not a whole number"),
    ("input_shape_list_of_junk", 'input_shape = [(2, 4), "x"]', RUN, "must be a tuple of whole numbers"),
    ("input_shape_wrong_for_model", "input_shape = (2, 5)", RUN, "bad.py raised ValueError"),
    ("inputs_all_nan", "inputs = np.full((2, 4), np.nan)", RUN, "`inputs` in bad.py holds 8 NaN or infinite value(s)"),
    ("inputs_one_nan", "inputs = np.ones((2, 4))\ninputs[1, 2] = np.nan", RUN, "holds 1 NaN or infinite value(s) (the first at [1, 2])"),
    ("inputs_inf", "inputs = np.ones((2, 4)) * np.inf", RUN, "NaN or infinite"),
    ("inputs_nan_with_a_loss", "inputs = np.full((2, 4), np.nan)" + LOSS, ("run", "bad.py", "bad.py"), "NaN or infinite"),
    ("inputs_second_nan", "inputs = [np.ones((2, 4)), np.array([np.nan])]", RUN, "`inputs[1]` in bad.py holds 1 NaN"),
    ("inputs_text", 'inputs = "hello"', RUN, "holds <U5 values, not numbers"),
    ("inputs_objects", "inputs = np.array([object()])", RUN, "holds object values, not numbers"),
    ("inputs_dict", "inputs = {'x': 'one'}", RUN, "`inputs['x']` in bad.py holds <U3 values, not numbers"),
    ("targets_nan", "input_shape = (2, 4)" + LOSS + "targets = np.array([0.0, np.nan])", ("run", "bad.py", "bad.py"), "`targets` in bad.py holds 1 NaN"),
    ("targets_text", "input_shape = (2, 4)" + LOSS + 'targets = "ab"', ("run", "bad.py", "bad.py"), "`targets` in bad.py holds <U2 values"),
    ("param_map_text", 'input_shape = (2, 4)\nparam_map = "fc1.W"', RUN, "`param_map` in bad.py must be a dict from names to names"),
    ("param_map_numbers", 'input_shape = (2, 4)\nparam_map = {"0.W": 3}', RUN, "`param_map` in bad.py must be a dict"),
    ("param_map_list", 'input_shape = (2, 4)\nparam_map = ["0.W"]', RUN, "`param_map` in bad.py must be a dict"),
    ("param_map_to_nothing", 'input_shape = (2, 4)\nparam_map = {"0.W": "nope"}', RUN, "nope"),
    ("layouts_text", 'input_shape = (2, 4)\nlayouts = "out in"', RUN, "`layouts` in bad.py must be a dict"),
    ("activation_layout_number", "input_shape = (2, 4)\nactivation_layout = 5", RUN, "`activation_layout` in bad.py"),
    ("model_is_a_number", "=model = 3\ninput_shape = (2, 4)\n", RUN, "No adapter handles builtins.int from bad.py"),
    ("no_model", "=x = 1\n", RUN, "bad.py defines no model"),
    ("syntax_error", "=def (\n", RUN, "bad.py raised SyntaxError"),
    ("raises", "=raise RuntimeError('boom')\n", RUN, "bad.py raised RuntimeError: boom while loading"),
    ("exits", "=import sys\nsys.exit(3)\n", RUN, "bad.py called exit(3) while loading"),
    ("null_bytes", "=x = 1\x00\n", RUN, "bad.py raised"),
    ("empty_file", "=", RUN, "bad.py defines no model"),
    ("loss_on_one_side", "input_shape = (2, 4)" + LOSS, RUN, "bad.py defines a loss but good.py does not"),
    ("randomness_left_on", "input_shape = (2, 4)\nclass Noise:\n    def forward(self, x): return x + np.random.rand(*x.shape)\n"
     "    def backward(self, d): return d\nmodel = [Dense(), Noise()]", ("run", "bad.py", "bad.py"), "is not deterministic"),
    ("missing_file", None, ("run", "nope.py", "good.py"), "nope.py: no such file"),
    # the options of run and compare
    ("seed_negative", None, ("run", "good.py", "good.py", "--seed", "-5"), "'--seed': -5 is not in the range"),
    ("seed_2_to_the_64", None, ("run", "good.py", "good.py", "--seed", str(2**64)), "is not in the range"),
    ("seed_text", None, ("run", "good.py", "good.py", "--seed", "2**64"), "'2**64' is not a valid integer"),
    ("rtol_nan", None, ("run", "good.py", "good.py", "--rtol", "nan"), "nan is not a tolerance"),
    ("rtol_negative", None, ("run", "good.py", "good.py", "--rtol", "-1"), "-1.0 is not a tolerance"),
    ("rtol_zero", None, ("run", "good.py", "good.py", "--rtol", "0"), "0.0 is not a tolerance"),
    ("rtol_inf", None, ("run", "good.py", "good.py", "--rtol", "inf"), "inf is not a tolerance"),
    ("rtol_over_1", None, ("run", "good.py", "good.py", "--rtol", "2"), "2.0 is not a tolerance"),
    ("rtol_text", None, ("run", "good.py", "good.py", "--rtol", "tight"), "'tight' is not a valid float"),
    ("rtol_nan_on_compare", None, ("compare", "good.h5", "good.h5", "--rtol", "nan"), "nan is not a tolerance"),
    ("dtype_unknown", None, ("run", "good.py", "good.py", "--dtype", "float16"), "'float16' is not one of"),
    ("map_without_equals", None, ("run", "good.py", "good.py", "--map", "fc1"), "'fc1' is not NAME_A=NAME_B"),
    ("map_names_a_missing_layer_of_a", None, ("run", "good.py", "good.py", "--map", "nope=0"), "--map names layer 'nope', which good.py does not have"),
    ("map_names_a_missing_layer_of_b", None, ("run", "good.py", "good.py", "--map", "0=nope"), "--map names layer 'nope'"),
    ("map_on_compare", None, ("compare", "good.h5", "good.h5", "--map", "nope=0"), "--map names layer 'nope'"),
    ("param_map_without_equals", None, ("run", "good.py", "good.py", "--param-map", "x"), "'x' is not NAME_A=NAME_B"),
    ("param_map_naming_nothing", None, ("run", "good.py", "good.py", "--param-map", "nope=0.W"), "nope"),
    ("layers_matching_nothing", None, ("run", "good.py", "good.py", "--layers", "nothing*"), "--layers 'nothing*' matches no layer"),
    ("compression_unknown", None, ("run", "good.py", "good.py", "--compression", "zip"), "--compression must be one of gzip, lzf"),
    ("out_under_a_file", None, ("run", "good.py", "good.py", "-o", "good.py/out"), "is a file, not a folder"),
    ("html_exists", None, ("run", "good.py", "good.py", "--html", "good.py"), "good.py exists. Pass --force"),
    ("html_is_a_folder", None, ("run", "good.py", "good.py", "--html", "."), "is a folder"),
    ("plot_format", None, ("run", "good.py", "good.py", "--plot", "x.gif"), ".gif"),
    ("unknown_option", None, ("run", "good.py", "good.py", "--nope"), "No such option '--nope'"),
    ("missing_argument", None, ("run", "good.py"), "Missing argument 'B.py'"),
    ("unknown_command", None, ("frobnicate",), "No such command 'frobnicate'"),
    # compare, show: files that are not dumps, or dumps that do not go together
    ("compare_missing", None, ("compare", "good.h5", "nope.h5"), "nope.h5: no such file"),
    ("compare_text_file", "=not python", ("compare", "good.h5", "bad.py"), "bad.py raised"),
    ("compare_other_shapes", "=import torch\nmodel = torch.nn.Linear(5, 3)\n", ("compare", "good.h5", "bad.py"), "Cannot map parameter"),
    ("show_missing", None, ("show", "nope.h5"), "nope.h5: no such file"),
    ("show_folder", None, ("show", "."), ".: no such file"),
    ("show_a_script", None, ("show", "good.py"), "good.py is not an HDF5 file"),
    ("inspect_a_text_file", None, ("inspect", "notes.txt"), "notes.txt is not an HDF5 file"),
    ("inspect_missing", None, ("inspect", "nope.h5"), "nope.h5: no such file"),
    # inspect's options
    ("inspect_lr_negative", None, ("inspect", "good.h5", "--lr", "-1"), "-1.0 is not a learning rate"),
    ("inspect_lr_nan", None, ("inspect", "good.h5", "--lr", "nan"), "nan is not a learning rate"),
    ("inspect_lr_zero", None, ("inspect", "good.h5", "--lr", "0"), "0.0 is not a learning rate"),
    ("inspect_lr_inf", None, ("inspect", "good.h5", "--lr", "inf"), "inf is not a learning rate"),
    ("inspect_activation_kind", None, ("inspect", "good.h5", "--activation", "0=swish"), "the kind must be one of"),
    ("inspect_activation_form", None, ("inspect", "good.h5", "--activation", "0"), "'0' is not NAME_A=NAME_B"),
    # overfit's
    ("overfit_lr_negative", None, ("overfit", "good.py", "--lr", "-1"), "-1.0 is not a learning rate"),
    ("overfit_lr_inf", None, ("overfit", "good.py", "--lr", "inf"), "inf is not a learning rate"),
    ("overfit_steps_zero", None, ("overfit", "good.py", "--steps", "0"), "'--steps': 0 is not in the range x>=1"),
    ("overfit_batch_zero", None, ("overfit", "good.py", "--batch", "0"), "'--batch': 0 is not in the range x>=1"),
    ("overfit_seed_negative", None, ("overfit", "good.py", "--seed", "-1"), "'--seed': -1 is not in the range"),
    # gradcheck's
    ("gradcheck_samples_negative", None, ("gradcheck", "good.py", "--samples", "-1"), "'--samples': -1 is not in the range x>=0"),
    ("gradcheck_at_negative", None, ("gradcheck", "good.py", "--at", "0.W=-1,2"), "an index counts from 0"),
    ("gradcheck_at_text", None, ("gradcheck", "good.py", "--at", "0.W=a,b"), "is not NAME=I,J"),
    ("gradcheck_at_outside", None, ("gradcheck", "good.py", "--at", "0.W=100,100"), "100"),
    ("gradcheck_at_unknown", None, ("gradcheck", "good.py", "--at", "nope.W=1,1"), "nope.W"),
    ("gradcheck_seed_negative", None, ("gradcheck", "good.py", "--seed", "-1"), "'--seed': -1 is not in the range"),
    # dump's
    ("dump_weights_from_missing", None, ("dump", "good.py", "-o", "x.h5", "--weights-from", "nope.h5"), "nope.h5: no such file"),
    ("dump_weights_from_a_script", None, ("dump", "good.py", "-o", "x.h5", "--weights-from", "good.py"), "good.py is not an HDF5 file"),
    ("dump_exists", None, ("dump", "good.py", "-o", "good.h5"), "good.h5 exists. Pass --force"),
    ("dump_seed_negative", None, ("dump", "good.py", "-o", "x.h5", "--seed", "-1"), "'--seed': -1 is not in the range"),
    ("dump_compression_unknown", None, ("dump", "good.py", "-o", "x.h5", "--compression", "zip"), "--compression must be one of"),
    ("dump_out_is_a_folder", None, ("dump", "good.py", "-o", "."), "is a folder"),
]


@pytest.mark.parametrize("bad, args, says", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, bad, args, says):
    write(tmp_path, "good.py", GOOD)
    write(tmp_path, "notes.txt", "not a dump\n")
    if bad is not None:
        write(tmp_path, "bad.py", bad[1:] if bad.startswith("=") else NET + bad + "\n")
    if "good.h5" in args:
        assert cli("dump", "good.py", "-o", "good.h5")[0] == 0
    code, out, err = cli(*args)
    assert code == 2, err + out
    line = one_error_line(err)
    assert says in line, line
    assert err.rstrip().endswith(line)  # the error is the last thing said
    if "Traceback" in err:  # the user's own, above the line: none of layerdiff's frames
        assert "layerdiff/" not in err.split(line)[0] and "adapters/" not in err.split(line)[0], err


def test_bad_inputs_are_many():
    assert len(CASES) >= 90


def test_a_refused_seed_leaves_no_run_folder(cli, tmp_path):
    write(tmp_path, "good.py", GOOD)
    assert cli("run", "good.py", "good.py", "--seed", str(2**64))[0] == 2
    assert not (tmp_path / "layerdiff-out").exists()


def test_a_map_naming_a_missing_layer_is_refused_before_the_dumps_are_written(cli, tmp_path):
    write(tmp_path, "good.py", GOOD)
    code, _, err = cli("run", "good.py", "good.py", "--map", "nope=0")
    assert code == 2 and "--map names layer 'nope'" in one_error_line(err)
    assert not (tmp_path / "layerdiff-out").exists()


def test_rtol_nan_through_the_api_is_refused_not_passed():
    import layerdiff

    class Scale:
        def forward(self, x):
            return 2 * x

        def backward(self, d):
            return 2 * d

    for rtol in (float("nan"), -1.0, float("inf")):
        with pytest.raises(layerdiff.OptionError, match="rtol= must be a tolerance above 0"):
            layerdiff.compare_models([Scale()], [Scale()], input_shape=(2, 3), rtol=rtol)
