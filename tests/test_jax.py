"""JAX as a first-class side: pure functions with taps, Flax NNX and Linen modules, under jit, in float64."""

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import layerdiff
from layerdiff import ModelFileError, modelfile, runner
from layerdiff.adapter import Forcing

from conftest import FIXTURES, write

JAX_FIXTURES = {"mlp_jax.py": "mlp", "mlp_nnx.py": "mlp", "cnn_jax.py": "cnn", "cnn_linen.py": "cnn"}
THREE_WAY = [(f"{net}_numpy.py", f) for f, net in JAX_FIXTURES.items()] + [(f, f"{net}_torch.py") for f, net in JAX_FIXTURES.items()]
JAX_PAIRS = [("mlp_jax.py", "mlp_nnx.py"), ("cnn_linen.py", "cnn_jax.py")]


def worst_error(report):
    return max(t["max_abs"] for layer in report["layers"] for t in layer["tensors"] + layer["param_grads"])


@pytest.mark.parametrize("a,b", THREE_WAY + JAX_PAIRS)
def test_jax_fixture_agrees_with_numpy_torch_and_jax_in_float64(run_json, a, b):
    code, report = run_json(FIXTURES / a, FIXTURES / b, "--once")
    assert code == 0, report["forward"]
    assert report["forward"]["first_divergence"] is None and report["backward"]["first_divergence"] is None
    assert report["culprits"] == []
    assert worst_error(report) < 1e-10
    assert report["b" if b in JAX_FIXTURES else "a"]["meta"]["compute_dtype"] == "float64"


def test_flax_side_in_native_precision_agrees_within_float32_noise(run_json):
    code, report = run_json(FIXTURES / "mlp_nnx.py", FIXTURES / "mlp_torch.py", "--dtype", "native", "--once")
    assert code == 0
    assert report["a"]["meta"]["compute_dtype"] == "float32"


def test_float64_run_enables_x64_for_the_run_only_and_records_the_settings(cli, tmp_path):
    for users_setting in (False, True):
        jax.config.update("jax_enable_x64", users_setting)
        try:
            assert cli("dump", FIXTURES / "mlp_nnx.py", "-o", f"m{users_setting}.h5")[0] == 0
            assert jax.config.jax_enable_x64 is users_setting
        finally:
            jax.config.update("jax_enable_x64", False)
        with h5py.File(tmp_path / f"m{users_setting}.h5") as f:
            assert bool(f.attrs["jax_enable_x64"]) is True
            assert f.attrs["jax_default_matmul_precision"] == "highest"
            assert f.attrs["compute_dtype"] == "float64"
    assert jnp.ones(1).dtype == jnp.float32  # the model file's own arrays are untouched too


def test_channels_last_activations_are_stored_as_made_and_compared_in_pytorch_order(cli, tmp_path):
    code, out, _ = cli("run", FIXTURES / "cnn_linen.py", FIXTURES / "cnn_torch.py", "-o", "out", "--once")
    assert code == 0, out
    assert "conv1.kernel (3, 3, 3, 8) -> 0.weight (8, 3, 3, 3)  axes (3, 2, 0, 1)" in out
    with h5py.File(tmp_path / "out" / "cnn_linen.h5") as f:
        conv1 = f["layers/0000_conv1"]
        assert conv1["output"].shape == (4, 8, 8, 8) and conv1["output"].attrs["layout"] == "N H W C"
        assert f["inputs/0"].shape == (4, 3, 8, 8)  # the feed, in PyTorch's order
    with layerdiff.store.Dump(tmp_path / "out" / "cnn_linen.h5") as dump:
        assert dump.layers[0].tensors["input"].shape == (4, 3, 8, 8)
        assert dump.tensor(0, "input").shape == (4, 3, 8, 8)


def test_declared_channels_last_inputs_are_fed_to_a_channels_first_side_transposed(tmp_path):
    x = np.random.default_rng(3).standard_normal((2, 5, 5, 3))
    np.save(tmp_path / "x.npy", x)
    write(tmp_path, "flax_side.py", (
        "import jax, numpy as np\n"
        "from flax import nnx\n"
        f"inputs = np.load({str(tmp_path / 'x.npy')!r})\n"
        "model = nnx.Conv(3, 4, (3, 3), padding=((1, 1), (1, 1)), rngs=nnx.Rngs(0))\n"
    ))
    write(tmp_path, "torch_side.py", "import torch\nmodel = torch.nn.Conv2d(3, 4, 3, 1, 1)\n")
    result = layerdiff.run(tmp_path / "flax_side.py", tmp_path / "torch_side.py", out=tmp_path / "out")
    assert result.match, str(result)
    with layerdiff.store.Dump(result.dumps[1]) as torch_dump:
        assert np.array_equal(torch_dump.tensor(0, "input"), x.transpose(0, 3, 1, 2))


def jitted_mlp(tmp_path, *, shared=False):
    """mlp_jax.py with its apply under jax.jit; ``shared`` applies one jitted block twice (a cache hit in the run)."""
    body = (
        "import sys, jax, jax.numpy as jnp\n"
        f"sys.path.insert(0, {str(FIXTURES)!r})\n"
        "import layerdiff, mlp_jax\n"
        "from mlp_jax import input_shape, loss, targets\n"
    )
    if shared:
        body += (
            "@jax.jit\n"
            "def block(p, x):\n"
            "    return layerdiff.tap('block', jnp.tanh(x @ p['W'] + p['b']))\n"
            "def apply(params, x):\n"
            "    h = layerdiff.tap('fc1', x @ params['fc1']['W'] + params['fc1']['b'])\n"
            "    return block(params['fc2'], block(params['fc2'], h))\n"
            "params = mlp_jax.init(jax.random.key(0))\n"
            "model = (apply, {'fc1': params['fc1'], 'fc2': params['fc2']})\n"
            "loss = None\n"
        )
    else:
        body += "model = (jax.jit(mlp_jax.apply), mlp_jax.init(jax.random.key(0)))\n"
    return write(tmp_path, "jitted.py", body)


def test_taps_and_their_gradients_are_captured_under_jit(run_json, tmp_path):
    code, report = run_json(jitted_mlp(tmp_path), FIXTURES / "mlp_numpy.py")
    assert code == 0
    assert [l["layer_a"] for l in report["layers"]] == ["fc1", "relu1", "fc2", "sig2", "fc3", "tanh3", "fc4", "loss"]
    assert all({"output", "grad_output"} <= {t["key"] for t in l["tensors"]} for l in report["layers"])
    assert all(l["param_grads"] for l in report["layers"] if l["layer_a"].startswith("fc"))


def test_tap_grad_inside_a_jax_run_hands_the_gradient_back(tmp_path):
    write(tmp_path, "grads.py", (
        "import jax.numpy as jnp\n"
        "import layerdiff\n"
        "def apply(params, x):\n"
        "    h = layerdiff.tap('fc1', x @ params['fc1']['W'])\n"
        "    return h * jnp.sum(layerdiff.tap_grad('fc1', jnp.ones(2)))\n"
        "model = (apply, {'fc1': {'W': jnp.ones((3, 2))}})\n"
        "input_shape = (4, 3)\n"
    ))
    trace = runner.run_one(modelfile.load(tmp_path / "grads.py"))
    assert np.allclose(trace.upstream[0] * 2, trace.layers[0].tensors["grad_output"])


def test_a_jitted_block_called_twice_records_two_calls_with_their_own_gradients(tmp_path):
    trace = runner.run_one(modelfile.load(jitted_mlp(tmp_path, shared=True)), seed=1)
    calls = {l.name: l.tensors for l in trace.layers}
    assert list(calls) == ["fc1", "block", "block#2"]
    first, second, upstream = calls["block"], calls["block#2"], trace.upstream[0]
    assert np.allclose(second["grad_output"], upstream)
    # d(tanh(h W + b))/dh = (g * (1 - y^2)) W^T: the first call receives the second's input gradient.
    W = next(p.value for p in trace.params if p.name == "fc2.W")
    assert np.allclose(first["grad_output"], (upstream * (1 - second["output"] ** 2)) @ W.T)


def test_nnx_and_linen_calls_are_named_by_their_path(tmp_path):
    write(tmp_path, "nested.py", (
        "import jax, jax.numpy as jnp\n"
        "from flax import linen as nn\n"
        "class Block(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(4, name='fc')(nn.LayerNorm(name='norm')(x))\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return Block(name='head')(Block(name='body')(x))\n"
        "net = Net()\n"
        "model = (net, net.init(jax.random.key(0), jnp.ones((2, 4))))\n"
        "input_shape = (2, 4)\n"
    ))
    linen = runner.run_one(modelfile.load(tmp_path / "nested.py"))
    assert [l.name for l in linen.layers] == ["body.norm", "body.fc", "head.norm", "head.fc"]
    assert [l.params for l in linen.layers][1] == ["body.fc.kernel", "body.fc.bias"]
    nnx = runner.run_one(modelfile.load(FIXTURES / "bug_nnx_sigmoid_custom_vjp.py"))
    assert [l.name for l in nnx.layers] == ["fc1", "fc2", "sig2", "fc3", "fc4", "loss"]
    assert [p.name for p in nnx.params][:2] == ["fc1.kernel", "fc1.bias"]  # definition order, as PyTorch lists them


def test_forced_replay_runs_eagerly_and_each_layer_records_its_own_result(tmp_path):
    model = runner.prepare(modelfile.load(jitted_mlp(tmp_path)), "float64")
    feed, _ = runner.make_feed([model], 0)
    plain = model.run(feed)
    rng = np.random.default_rng(7)
    forced_out, forced_grad = rng.standard_normal((8, 32)), rng.standard_normal((8, 32))
    replay = model.run(feed, Forcing(outputs={"fc2": [forced_out]}, grad_outputs={"fc3": [forced_grad]}))
    layers = {l.name: l.tensors for l in replay.layers}
    assert replay.info.settings["jax_jit"] == "disabled for teacher forcing"
    assert np.array_equal(layers["fc2"]["output"], plain.layers[2].tensors["output"])  # its own, local output
    assert np.allclose(layers["sig2"]["output"], 1 / (1 + np.exp(-forced_out)))  # the next layer received the forced one
    grad_W = next(p.grad for p in replay.params if p.name == "fc3.W")
    assert np.allclose(grad_W, layers["sig2"]["output"].T @ forced_grad)  # its backward ran on the forced gradient
    arrived = layers["tanh3"]["grad_output"] * (1 - layers["tanh3"]["output"] ** 2)
    assert np.allclose(layers["fc3"]["grad_output"], arrived)  # what it records is the gradient as it arrived


def test_forcing_inside_vmap_says_why_it_cannot(tmp_path):
    write(tmp_path, "vmapped.py", (
        "import jax, jax.numpy as jnp\n"
        "import layerdiff\n"
        "def apply(params, x):\n"
        "    return jax.vmap(lambda r: layerdiff.tap('fc1', r @ params['fc1']['W']))(x)\n"
        "model = (apply, {'fc1': {'W': jnp.ones((3, 2))}})\n"
        "input_shape = (4, 3)\n"
    ))
    model = runner.prepare(modelfile.load(tmp_path / "vmapped.py"), "native")
    feed, _ = runner.make_feed([model], 0)
    with pytest.raises(ModelFileError, match=r"Layer 'fc1' of vmapped.py cannot be teacher-forced: it runs inside"):
        model.run(feed, Forcing(outputs={"fc1": [np.zeros(2)]}))


def test_linen_module_without_its_variables_is_refused(tmp_path):
    write(tmp_path, "bare.py", "from flax import linen as nn\nmodel = nn.Dense(4)\ninput_shape = (2, 3)\n")
    with pytest.raises(ModelFileError, match=r"The Linen module in bare.py comes without its variables. Write `model = \(module, module.init"):
        runner.run_one(modelfile.load(tmp_path / "bare.py"))


def test_activation_layout_must_name_batch_and_channel_axes(tmp_path):
    write(tmp_path, "odd.py", "from flax import nnx\nmodel = nnx.Linear(3, 2, rngs=nnx.Rngs(0))\nactivation_layout = 'H W'\n")
    with pytest.raises(ModelFileError, match=r"`activation_layout` in odd.py must name the axes of its inputs, such as \"N H W C\""):
        modelfile.load(tmp_path / "odd.py")


def test_user_code_that_raises_in_jax_is_reported_in_one_line(cli, tmp_path):
    write(tmp_path, "broken.py", (
        "import jax.numpy as jnp\n"
        "def apply(params, x):\n"
        "    return x @ params['W']\n"
        "model = (apply, {'W': jnp.ones((3, 5))})\n"
        "input_shape = (2, 5)\n"
    ))
    code, _, err = cli("dump", "broken.py", "-o", "b.h5")
    assert code == 2
    assert "error: broken.py raised TypeError" in err and "in its forward pass" in err


def test_flax_model_without_the_jax_adapter_says_how_to_install_it(monkeypatch):
    from flax import nnx

    monkeypatch.setattr(modelfile, "available", lambda: ["numpy", "torch"])
    monkeypatch.setattr(modelfile, "adapter_for", lambda obj: None)
    with pytest.raises(ModelFileError, match=r"No adapter handles flax\..*Linear from b.py. Installed: numpy, torch. Install with: pip install 'layerdiff\[jax\]'"):
        modelfile.from_object(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), source="b.py")
