"""Capture records without changing the numbers, and keeps its own copy of each value."""

import numpy as np
import pytest
import torch

import layerdiff
from layerdiff import modelfile, runner
from layerdiff.adapter import Feed

from conftest import FIXTURES


def feed_for(shape, targets=None, seed=0):
    rng = np.random.default_rng(seed)
    return Feed([rng.standard_normal(shape)], targets, lambda i, s: np.random.default_rng([seed, 1, i]).standard_normal(s))


def test_torch_capture_leaves_loss_and_gradients_bitwise_identical():
    model = modelfile.load(FIXTURES / "cnn_torch.py")
    side = runner.prepare(model, "float64")
    feed = feed_for((4, 3, 8, 8), model.targets)
    trace = side.run(feed)

    net = model.obj
    net.zero_grad(set_to_none=True)
    loss = model.loss(net(torch.from_numpy(feed.inputs[0])), torch.from_numpy(model.targets))
    loss.backward()
    assert float(loss.detach()) == trace.loss
    for p in trace.params:
        assert np.array_equal(net.get_parameter(p.name).grad.numpy(), p.grad), p.name


def test_numpy_capture_leaves_loss_and_gradients_bitwise_identical():
    model = modelfile.load(FIXTURES / "mlp_numpy.py")
    feed = feed_for((8, 16), model.targets)
    trace = runner.prepare(model, "native").run(feed)

    net = model.obj
    x = feed.inputs[0]
    for layer in net.layers:
        x = layer.forward(x)
    loss = model.loss.forward(x, model.targets)
    d = model.loss.backward()
    for layer in reversed(net.layers):
        d = layer.backward(d)
    assert loss == trace.loss
    assert np.array_equal(net.fc2.grads["W"], next(p.grad for p in trace.params if p.name == "fc2.W"))


class Reuses:
    """A layer that writes into the same buffer on every call, as hand-written code does to save memory."""

    def __init__(self):
        self.buffer = None

    def forward(self, x):
        if self.buffer is None:
            self.buffer = np.empty_like(x)
        np.multiply(x, 2.0, out=self.buffer)
        return self.buffer

    def backward(self, dout):
        return 2.0 * dout


class Overwrites:
    def forward(self, x):
        x *= 0  # mutates the previous layer's output after it was returned
        return x + 1

    def backward(self, dout):
        return np.zeros_like(dout)


def test_values_are_copied_when_recorded():
    trace = runner.run_one(modelfile.from_object([Reuses(), Overwrites()], input_shape=(2, 3)))
    first = trace.layers[0]
    assert np.array_equal(first.tensors["output"], 2.0 * first.tensors["input"])


def test_tap_outside_a_run_returns_its_argument():
    h = np.arange(3.0)
    assert layerdiff.tap("fc1", h) is h
    assert layerdiff.tap_grad("fc1", h) is h


def test_a_value_passed_on_is_copied_once_but_a_changed_one_again():
    class Double:
        def forward(self, x):
            return 2 * x

        def backward(self, d):
            return 2 * d

    class ClipInPlace:  # changes its input in place and returns it
        def forward(self, x):
            self.mask = x > 0
            x[~self.mask] = 0.0
            return x

        def backward(self, d):
            d[~self.mask] = 0.0
            return d

    model = modelfile.from_object([Double(), ClipInPlace(), Double()], input_shape=(4, 5))
    trace = runner.prepare(model, "native").run(feed_for((4, 5)))
    double, clip, last = (r.tensors for r in trace.layers[:3])
    assert clip["input"] is double["output"]  # handed on untouched: one copy
    assert (clip["input"] < 0).any() and not (clip["output"] < 0).any()
    assert last["input"] is clip["output"]
    assert double["grad_output"] is clip["grad_input"]


def test_torch_copies_a_tensor_handed_from_module_to_module_once():
    net = torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    model = modelfile.from_object(net, input_shape=(3, 5))
    trace = runner.prepare(model, "native").run(feed_for((3, 5)))
    first, tanh, last = (r.tensors for r in trace.layers)
    assert tanh["input"] is first["output"] and last["input"] is tanh["output"]
    assert tanh["grad_output"] is last["grad_input"]


class ChangedAfter(torch.nn.Module):
    """Outputs modified in place after their module returned them: a functional in-place ReLU on fc1's output,
    and fc2's output added into in place (a ResNet's ``out += identity``), its input h read twice."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(5, 5), torch.nn.Linear(5, 5), torch.nn.Linear(5, 2)

    def forward(self, x):
        h = torch.relu_(self.fc1(x))
        r = self.fc2(h)
        r += h
        return self.fc3(r)


def test_torch_records_what_each_module_produced_and_received_though_changed_in_place_after():
    net = ChangedAfter().double()
    model = modelfile.from_object(net, input_shape=(3, 5))
    feed = feed_for((3, 5))
    trace = runner.prepare(model, "native").run(feed)
    got = {r.name: r.tensors for r in trace.layers}

    # The same computation without layerdiff, every intermediate its own tensor.
    x = torch.from_numpy(feed.inputs[0]).requires_grad_(True)
    h0 = net.fc1(x)
    h = torch.relu(h0)
    r0 = net.fc2(h)
    r = r0 + h
    y = net.fc3(r)
    u = torch.from_numpy(trace.upstream[0])
    gx, gh0, gr0, gr = torch.autograd.grad(y, [x, h0, r0, r], u)
    want = {
        "fc1": {"input": x, "output": h0, "grad_output": gh0, "grad_input": gx},
        "fc2": {"input": h, "output": r0, "grad_output": gr0, "grad_input": gr0 @ net.fc2.weight},  # fc2's share alone
        "fc3": {"input": r, "output": y, "grad_output": u, "grad_input": gr},
    }
    for layer, tensors in want.items():
        for kind, value in tensors.items():
            assert np.array_equal(got[layer][kind], value.detach().numpy()), (layer, kind)


def test_torch_records_a_linear_output_before_an_inplace_relu_module_and_restores_the_flag():
    relu = torch.nn.ReLU(inplace=True)
    net = torch.nn.Sequential(torch.nn.Linear(5, 5), relu, torch.nn.Linear(5, 2)).double()
    model = modelfile.from_object(net, input_shape=(3, 5))
    feed = feed_for((3, 5))
    trace = runner.prepare(model, "native").run(feed)
    linear, activation, _ = (r.tensors for r in trace.layers)
    pre = net[0](torch.from_numpy(feed.inputs[0])).detach().numpy()
    assert (pre < 0).any() and np.array_equal(linear["output"], pre)
    assert np.array_equal(activation["output"], np.maximum(pre, 0))
    assert relu.inplace


def test_torch_records_stay_as_recorded_when_the_model_runs_again():
    net = ChangedAfter().double()
    model = modelfile.from_object(net, input_shape=(3, 5))
    side = runner.prepare(model, "native")
    first = side.run(feed_for((3, 5)))
    kept = {(r.name, k): v.copy() for r in first.layers for k, v in r.tensors.items()}
    side.run(feed_for((3, 5), seed=1))
    assert all(np.array_equal(r.tensors[k], kept[r.name, k]) for r in first.layers for k in r.tensors)


def test_torch_refuses_a_hook_that_changes_a_recorded_gradient_in_place():
    class Clamps(torch.nn.Module):  # breaks PyTorch's contract: a hook must not modify its argument
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(5, 5), torch.nn.Linear(5, 2)

        def forward(self, x):
            h = self.fc1(x)
            h.register_hook(lambda g: g.mul_(0.5))
            return self.fc2(h)

    model = modelfile.from_object(Clamps().double(), input_shape=(3, 5))
    with pytest.raises(layerdiff.ModelFileError, match="modified in place"):
        runner.prepare(model, "native").run(feed_for((3, 5)))


def test_a_numpy_run_shares_the_models_weights_and_gives_them_back_writable():
    """Each run works on a copy of the model whose weights are the model's own arrays (read-only meanwhile): no
    copy of every weight per run; the gradients recorded are the copy's own, not copied again."""
    side = runner.prepare(modelfile.load(FIXTURES / "mlp_numpy.py"), "float64")
    feed, _ = runner.make_feed([side], 0)
    own = {p.name: p.value for p in side.adapter.parameters(side.handle, side.spec)}
    first, second = side.run(feed), side.run(feed)
    held = {p.name: p for p in first.params}
    for p in second.params:
        assert np.shares_memory(p.value, held[p.name].value)  # the model's array, in both runs
        assert np.array_equal(p.value, own[p.name]) and p.value.flags.writeable
        assert not np.shares_memory(p.grad, held[p.name].grad) and np.array_equal(p.grad, held[p.name].grad)


def test_a_numpy_layer_that_writes_into_its_weights_is_named_with_them_untouched(tmp_path):
    (tmp_path / "inplace.py").write_text(
        "import numpy as np\n"
        "class Dense:\n"
        "    def __init__(self): self.W = np.full((4, 3), 0.1)\n"
        "    def forward(self, x): self.x = x; return x @ self.W\n"
        "    def backward(self, d):\n"
        "        self.W *= 0.5  # in place, with no learning-rate argument to say so\n"
        "        return d @ self.W.T\n"
        "model = [Dense()]\ninput_shape = (2, 4)\n"
    )
    model = modelfile.load(tmp_path / "inplace.py")
    side = runner.prepare(model, "float64")
    with pytest.raises(layerdiff.ModelFileError, match="layer '0' writes into its weights in backward"):
        side.run(runner.make_feed([side], 0)[0])
    assert np.all(side.handle[0].W == 0.1) and side.handle[0].W.flags.writeable
