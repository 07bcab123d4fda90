"""Recording inside the user's own training loop: one iteration becomes a dump that compare runs a model file on."""

import json

import numpy as np
import pytest
import torch

import layerdiff
from layerdiff import store

from conftest import FIXTURES, write


def torch_net() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()


MODEL_FILE = (
    "import torch\n"
    "torch.manual_seed(5)\n"
    "model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()\n"
    "loss = torch.nn.CrossEntropyLoss()\n"  # the dump's output gradient stands for it
)


@pytest.fixture
def loop_dump(tmp_path):
    """Three SGD steps of a torch loop, the second recorded; and the weights that step ran with."""
    net = torch_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x, y = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 2, 0, 1, 2])
    for step in range(3):
        opt.zero_grad()
        if step == 1:
            before = {k: v.detach().clone() for k, v in net.named_parameters()}
            with layerdiff.record(net, tmp_path / "step1.h5"):
                torch.nn.functional.cross_entropy(net(x), y).backward()
        else:
            torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return tmp_path / "step1.h5", before, net


def test_a_recorded_iteration_holds_the_weights_it_ran_with_and_every_layer(loop_dump):
    path, before, net = loop_dump
    with store.Dump(path) as d:
        assert [l.name for l in d.layers] == ["0", "1", "2"]
        for name, value in before.items():
            assert np.array_equal(d.param(name).value, value.numpy())  # before the optimizer's step
            assert not np.array_equal(d.param(name).value, net.get_parameter(name).detach().numpy())
        assert d.info.upstream_sha256.startswith("recorded:") and d.loss is None
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())  # every hook removed


def test_compare_runs_a_model_file_on_the_recorded_iteration(cli, loop_dump, tmp_path):
    path, _, _ = loop_dump
    write(tmp_path, "same.py", MODEL_FILE)
    code, out, err = cli("compare", path, tmp_path / "same.py", "--json")
    report = json.loads(out)
    assert code == 0 and report["match"], err
    assert any("stands for the loss" in note for note in report["feed"])
    write(tmp_path, "wrong.py", MODEL_FILE.replace("torch.nn.Tanh()", "torch.nn.Sigmoid()"))
    code, out, _ = cli("compare", path, tmp_path / "wrong.py", "--json")
    assert code == 1 and [(c["layer_a"], c["pass"]) for c in json.loads(out)["culprits"]] == [("1", "forward"), ("1", "backward")]


class Dense:
    def __init__(self, n_in, n_out, seed):
        self.W = np.random.default_rng(seed).standard_normal((n_in, n_out)) * 0.5
        self.b = np.zeros(n_out)

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout):
        self.dW, self.db = self.x.T @ dout, dout.sum(0)
        return dout @ self.W.T


class Tanh:
    def forward(self, x):
        self.out = np.tanh(x)
        return self.out

    def backward(self, dout):
        return dout * (1 - self.out**2)


def test_a_numpy_layer_list_driven_by_its_own_loop_is_recorded_and_compared(cli, tmp_path):
    layers = [Dense(4, 8, 0), Tanh(), Dense(8, 3, 1)]
    x = np.random.default_rng(3).standard_normal((5, 4))
    with layerdiff.record(layers, tmp_path / "np.h5"):
        h = x
        for layer in layers:
            h = layer.forward(h)
        g = np.ones_like(h) / h.size
        for layer in reversed(layers):
            g = layer.backward(g)
    assert all("forward" not in vars(layer) for layer in layers)  # the wrapped methods are gone again
    write(tmp_path, "ref.py", MODEL_FILE.replace("loss = torch.nn.CrossEntropyLoss()\n", ""))
    code, out, err = cli("compare", tmp_path / "np.h5", tmp_path / "ref.py", "--json")
    report = json.loads(out)
    assert code == 0 and report["match"], err + out
    assert [l["layer_a"] for l in report["layers"]] == ["0", "1", "2"]


def test_start_and_stop_record_what_runs_between_them(tmp_path):
    net = torch_net()
    rec = layerdiff.record(net, tmp_path / "s.h5").start()
    net(torch.randn(2, 4, dtype=torch.float64)).sum().backward()
    assert rec.stop() == tmp_path / "s.h5"
    with pytest.raises(layerdiff.ModelFileError, match="was never started"):
        rec.stop()


def test_an_iteration_that_raises_writes_nothing_and_leaves_no_hook(tmp_path):
    net = torch_net()
    with pytest.raises(RuntimeError):
        with layerdiff.record(net, tmp_path / "r.h5"):
            net(torch.randn(2, 5, dtype=torch.float64))  # the wrong width
    assert not (tmp_path / "r.h5").exists()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_bad_uses_are_refused_in_the_users_terms(tmp_path):
    with pytest.raises(layerdiff.ModelFileError, match=r"cannot record a builtins.dict"):
        layerdiff.record({"not": "a model"}, tmp_path / "x.h5").start()
    with pytest.raises(layerdiff.ModelFileError, match=r"Nothing was recorded for .*e.h5: the model was not called"):
        with layerdiff.record(torch_net(), tmp_path / "e.h5"):
            pass
    (tmp_path / "there.h5").write_bytes(b"")
    with pytest.raises(layerdiff.DumpError, match=r"there.h5 exists. Pass force=True"):
        layerdiff.record(torch_net(), tmp_path / "there.h5").start()


def test_a_flax_nnx_step_is_recorded_with_the_gradients_it_returns(cli, tmp_path):
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import sys
    sys.path.insert(0, str(FIXTURES))
    try:
        from mlp_nnx import MLP
    finally:
        sys.path.remove(str(FIXTURES))
    model = MLP(nnx.Rngs(3))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 16)), dtype=jnp.float32)
    y = jnp.asarray(np.random.default_rng(1).integers(0, 10, size=8))

    def loss_fn(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    with layerdiff.record(model, tmp_path / "nnx.h5") as rec:
        _, grads = nnx.value_and_grad(loss_fn)(model)
        rec.gradients(grads)
    with store.Dump(tmp_path / "nnx.h5") as d:
        assert [l.name for l in d.layers] == ["fc1", "fc2", "fc3", "fc4"]
        assert d.param_names()[:2] == ["fc1.kernel", "fc1.bias"] and d.param_grad("fc4.bias") is not None
    code, out, err = cli("compare", tmp_path / "nnx.h5", FIXTURES / "mlp_nnx.py", "--json")
    assert code == 0 and json.loads(out)["match"], err + out
