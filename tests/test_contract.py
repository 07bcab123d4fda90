"""The model-file forms of the README, each compared against a reference that it must match."""

import numpy as np
import torch

import layerdiff

from conftest import write


class Dense:
    """Parameters as attributes W/b, gradients dW/db, input gradient returned."""

    def __init__(self, n_in, n_out, seed):
        rng = np.random.default_rng(seed)
        self.W = rng.standard_normal((n_in, n_out)) * 0.3
        self.b = np.zeros(n_out)

    def forward(self, x, training=False):
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        return dout @ self.W.T


class Tanh:
    """Output stored on the layer, input gradient stored as dX."""

    def forward(self, x):
        self.output = np.tanh(x)

    def backward(self, dout):
        self.dX = dout * (1 - self.output**2)


class Odd:
    """Unusual shape: parameters in `theta`, gradient in `g_theta`, input gradient in `back`."""

    def __init__(self, n):
        self.theta = np.linspace(0.5, 1.5, n)

    def forward(self, x):
        self.x = x
        return x * self.theta

    def backward(self, dout):
        self.g_theta = (dout * self.x).sum(axis=0)
        self.back = dout * self.theta


def torch_reference():
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def test_numpy_attribute_layers_match_torch():
    result = layerdiff.compare_models([Dense(4, 5, 0), Tanh(), Dense(5, 3, 1)], torch_reference(), input_shape=(6, 4))
    assert result.match, str(result)
    assert [l.layer_a for l in result.comparison.layers] == ["0", "1", "2"]


def test_glue_in_the_model_file_says_where_things_are(cli, tmp_path):
    write(tmp_path, "odd.py", (
        "import numpy as np\n"
        "class Odd:\n"
        "    def __init__(self): self.theta = np.linspace(0.5, 1.5, 4)\n"
        "    def forward(self, x): self.x = x; return x * self.theta\n"
        "    def backward(self, dout): self.g_theta = (dout * self.x).sum(0); self.back = dout * self.theta\n"
        "model = [Odd()]\n"
        "input_shape = (3, 4)\n"
        "def params_of(layer): return {'theta': layer.theta}\n"
        "def grads_of(layer): return {'theta': layer.g_theta}\n"
        "def input_grad_of(layer, returned): return layer.back\n"
    ))
    write(tmp_path, "ref.py", (
        "import torch\n"
        "class Scale(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.theta = torch.nn.Parameter(torch.ones(4))\n"
        "    def forward(self, x): return x * self.theta\n"
        "model = Scale()\n"
    ))
    code, out, err = cli("run", "odd.py", "ref.py", "--json")
    assert code == 0, out + err


def test_numpy_against_numpy_finds_a_wrong_backward():
    class BadTanh(Tanh):
        def backward(self, dout):
            self.dX = dout * (1 - self.output)  # forgot the square

    result = layerdiff.compare_models([Dense(4, 5, 0), BadTanh(), Dense(5, 3, 1)], [Dense(4, 5, 2), Tanh(), Dense(5, 3, 3)], input_shape=(6, 4))
    assert not result.match
    assert result.comparison.forward is None
    assert result.comparison.backward.layer_a == "1"


class Block(torch.nn.Module):
    """A residual branch and two heads: not a chain."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.head_a = torch.nn.Linear(4, 2)
        self.head_b = torch.nn.Linear(4, 3)
        self.scale = scale

    def forward(self, x):
        h = x + self.scale * torch.relu(self.fc(x))
        return self.head_a(h), self.head_b(h)


def test_torch_against_torch_with_branches_and_two_heads():
    assert layerdiff.compare_models(Block(), Block(), input_shape=(3, 4)).match
    result = layerdiff.compare_models(Block(), Block(scale=1.01), input_shape=(3, 4))
    assert not result.match
    assert result.comparison.forward.layer_a in ("head_a", "head_b")
    assert result.comparison.forward.note.startswith("already different where this layer receives it")


def free_form_numpy(bug=False):
    """Free-form NumPy with taps: a residual block written as one function pair."""

    class Net:
        def __init__(self):
            rng = np.random.default_rng(5)
            self.params = {"W": rng.standard_normal((4, 4)) * 0.5, "b": np.zeros(4)}

        def forward(self, x):
            W, b = self.params["W"], self.params["b"]
            self.x = x
            self.z = layerdiff.tap("fc", x @ W + b)
            self.r = layerdiff.tap("relu", np.maximum(self.z, 0))
            return x + self.r

        def backward(self, dout):
            W = self.params["W"]
            dr = layerdiff.tap_grad("relu", dout)
            dz = layerdiff.tap_grad("fc", dr * (self.z > 0) if not bug else dr)
            self.grads = {"W": self.x.T @ dz, "b": dz.sum(0)}
            return dout + dz @ W.T

    return Net()


class TorchResidual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        # Tapping a module's output under the module's own name records it once.
        return x + layerdiff.tap("relu", torch.relu(layerdiff.tap("fc", self.fc(x))))


def test_free_form_numpy_taps_against_torch_taps():
    result = layerdiff.compare_models(free_form_numpy(), TorchResidual(), input_shape=(5, 4), param_map={"W": "fc.weight", "b": "fc.bias"})
    assert result.match, str(result)
    names = [l.layer_a for l in result.comparison.layers]
    assert names[:2] == ["fc", "relu"]
    assert result.comparison.only_b == []  # the tap of fc's own output is not a second layer
    # The network's own parameters belong to no tap: their gradients are compared on the torch layer's row.
    assert [t.key for t in result.comparison.layers[0].param_grads] == ["W ~ fc.weight", "b ~ fc.bias"]


def test_free_form_numpy_backward_bug_is_blamed_on_the_layer_whose_backward_it_is():
    # The ReLU's backward forgets its mask: the wrong gradient arrives at the tap "fc", made by "relu".
    result = layerdiff.compare_models(free_form_numpy(bug=True), TorchResidual(), input_shape=(5, 4), param_map={"W": "fc.weight", "b": "fc.bias"})
    assert result.comparison.forward is None
    assert result.comparison.backward.layer_a == "relu"
    assert [(c.layer_a, c.pass_) for c in result.comparison.culprits] == [("relu", "backward")]


def test_api_leaves_the_users_models_untouched():
    ref = torch_reference()
    before = [p.detach().clone() for p in ref.parameters()]
    layerdiff.compare_models([Dense(4, 5, 0), Tanh(), Dense(5, 3, 1)], ref, input_shape=(6, 4))
    assert all(p.dtype == torch.float32 for p in ref.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, ref.parameters()))
