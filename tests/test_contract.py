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


class BasicBlock(torch.nn.Module):
    """torchvision's ResNet block: in-place ops on what captured modules return."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return torch.nn.functional.relu(out, inplace=True)


def test_in_place_ops_on_module_outputs_are_captured():
    result = layerdiff.compare_models(BasicBlock(), BasicBlock(), input_shape=(2, 4, 6, 6))
    assert result.match, str(result)
    assert [l.layer_a for l in result.comparison.layers] == ["conv1", "bn1", "relu", "conv2", "bn2"]
    assert all(any(t.key == "grad_input" for t in l.tensors) for l in result.comparison.layers)


class CalledTwice(torch.nn.Module):
    def __init__(self, shadow=False):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.shadow = shadow

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        if self.shadow:
            with torch.no_grad():
                self.fc(x)  # a side computation, outside autograd
        return self.fc(h)


def test_a_module_called_twice_gets_each_calls_gradients():
    trace = layerdiff.runner.run_one(layerdiff.api.modelfile.from_object(CalledTwice(shadow=True), input_shape=(3, 4)))
    calls = {r.name: r for r in trace.layers}
    assert set(calls) == {"fc", "fc#2", "fc#3"}
    assert {"grad_input", "grad_output"} <= set(calls["fc"].tensors) and {"grad_input", "grad_output"} <= set(calls["fc#3"].tensors)
    assert "grad_output" not in calls["fc#2"].tensors  # the no_grad call has none
    assert layerdiff.compare_models(CalledTwice(), CalledTwice(), input_shape=(3, 4)).match


def test_per_sample_losses_are_averaged_on_every_side():
    targets = np.array([0, 2, 1])
    mean = torch.nn.CrossEntropyLoss()
    per_sample = torch.nn.CrossEntropyLoss(reduction="none")
    result = layerdiff.compare_models(torch_reference(), torch_reference(), input_shape=(3, 4), targets=targets, loss_a=mean, loss_b=per_sample)
    assert result.match, str(result)


class DenseOutIn(Dense):
    """W kept as (out, in) and used as x @ W.T: the other common hand-written layout."""

    def __init__(self, n_in, n_out, seed):
        super().__init__(n_in, n_out, seed)
        self.W = np.ascontiguousarray(self.W.T)

    def forward(self, x, training=False):
        self.x = x
        return x @ self.W.T + self.b

    def backward(self, dout):
        self.dW = dout.T @ self.x
        self.db = dout.sum(axis=0)
        return dout @ self.W


def test_a_hand_written_out_in_weight_is_taken_as_its_shape_says():
    result = layerdiff.compare_models([DenseOutIn(4, 5, 0), Tanh(), DenseOutIn(5, 3, 1)], torch_reference(), input_shape=(6, 4))
    assert result.match, str(result)
    assert all(link.axes is None for link in result.links)


class AttributeNet:
    """A whole network object holding its layers as attributes, with no layer list."""

    def __init__(self):
        self.fc1, self.act, self.fc2 = Dense(4, 5, 0), Tanh(), Dense(5, 3, 1)

    def forward(self, x):
        self.act.forward(layerdiff.tap("0", self.fc1.forward(x)))
        return layerdiff.tap("2", self.fc2.forward(layerdiff.tap("1", self.act.output)))

    def backward(self, dout):
        dh = self.fc2.backward(layerdiff.tap_grad("2", dout))
        self.act.backward(layerdiff.tap_grad("1", dh))
        return self.fc1.backward(layerdiff.tap_grad("0", self.act.dX))


def test_a_network_holding_its_layers_as_attributes_has_their_parameters():
    result = layerdiff.compare_models(AttributeNet(), torch_reference(), input_shape=(6, 4))
    assert result.match, str(result)
    assert [link.src for link in result.links] == ["fc1.W", "fc1.b", "fc2.W", "fc2.b"]
    assert sum(len(l.param_grads) for l in result.comparison.layers) == 4
