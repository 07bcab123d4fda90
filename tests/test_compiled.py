"""A torch.compile'd model: captured through the eager module tree it wraps, and its compiled code checked against
that tree region by region, naming the region and the first operation that differs."""

import json


from conftest import FIXTURES, write

MLP = "torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))"

EAGER = f"import torch\ntorch.manual_seed(0)\nmodel = {MLP}\ninput_shape = (5, 6)\n"

# A compiler that gets one operation wrong: tanh compiled as hardtanh (a clipped line), forward only.
WRONG_TANH = f"""import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd


def wrong_tanh(gm, example_inputs):
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.tanh.default:
            node.target = torch.ops.aten.hardtanh.default
    gm.recompile()
    return make_boxed_func(gm)


torch.manual_seed(0)
model = torch.compile({MLP}, backend=aot_autograd(fw_compiler=wrong_tanh, bw_compiler=lambda gm, ex: make_boxed_func(gm)))
input_shape = (5, 6)
"""


def run(cli, tmp_path, a, b, *options):
    code, out, err = cli("run", "--json", "-o", tmp_path / "out", a, b, *options)
    assert code in (0, 1), err
    return code, json.loads(out)


def test_a_model_compiled_with_aot_eager_matches_its_eager_self(cli, tmp_path):
    write(tmp_path, "eager.py", EAGER)
    write(tmp_path, "compiled.py", EAGER.replace(f"model = {MLP}", f"model = torch.compile({MLP}, backend='aot_eager')"))
    code, report = run(cli, tmp_path, tmp_path / "eager.py", tmp_path / "compiled.py")
    assert code == 0 and report["culprits"] == []
    assert [l["layer_b"] for l in report["layers"]] == ["0", "1", "2"]  # its eager module tree, layer by layer


def test_one_operation_a_compiler_gets_wrong_is_named_in_its_region(cli, tmp_path):
    write(tmp_path, "eager.py", EAGER)
    write(tmp_path, "wrong.py", WRONG_TANH)
    code, report = run(cli, tmp_path, tmp_path / "eager.py", tmp_path / "wrong.py", "--once")
    assert code == 1
    [culprit] = report["culprits"]
    assert (culprit["layer_a"], culprit["layer_b"], culprit["pass"]) == ("compiled region 0", "0 … 2", "forward")
    assert "the first operation that differs: op 1, tanh in module '1'" in culprit["hint"]
    assert all(layer["verdict"] == "ok" for layer in report["layers"])  # the eager tree computes right


def test_a_compiled_model_against_a_hand_written_one(cli, tmp_path):
    write(tmp_path, "compiled_mlp.py", (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(FIXTURES)!r})\n"
        "from mlp_torch import model as eager, loss, targets, input_shape\n"
        "model = torch.compile(eager, backend='aot_eager')\n"
    ))
    code, report = run(cli, tmp_path, FIXTURES / "mlp_numpy.py", tmp_path / "compiled_mlp.py", "--once")
    assert code == 0 and report["match"], report["culprits"]


def test_a_model_compiled_with_inductor_matches_its_eager_self(cli, tmp_path):
    write(tmp_path, "eager.py", EAGER)
    write(tmp_path, "inductor.py", EAGER.replace(f"model = {MLP}", f"model = torch.compile({MLP})"))
    code, report = run(cli, tmp_path, tmp_path / "eager.py", tmp_path / "inductor.py", "--once")
    assert code == 0 and report["culprits"] == [], report["culprits"]
