"""One contract, run over every adapter and model form: what the runner, the store and the replay rely on."""

import numpy as np
import pytest

from layerdiff import modelfile, runner
from layerdiff.adapter import Forcing, verify
from layerdiff.layout import canonical

from conftest import FIXTURES

FORMS = {
    "numpy": "mlp_numpy.py",
    "torch": "mlp_torch.py",
    "jax function": "mlp_jax.py",
    "flax nnx": "mlp_nnx.py",
    "flax linen": "cnn_linen.py",
}


@pytest.fixture(params=list(FORMS), ids=list(FORMS))
def model(request):
    return runner.prepare(modelfile.load(FIXTURES / FORMS[request.param]), "float64")


def feed(model):
    return runner.make_feed([model], 0)[0]


def test_adapter_is_complete_and_claims_its_model(model):
    assert verify(model.adapter, model.adapter.name) is model.adapter
    assert model.adapter.claims(model.model.obj)
    assert isinstance(model.adapter.version(), str) and model.adapter.version()


def test_parameters_are_float64_arrays_and_load_back(model):
    params = model.parameters()
    assert params and all(type(p.value) is np.ndarray and p.value.dtype == np.float64 for p in params)
    rng = np.random.default_rng(0)
    new = {p.name: rng.standard_normal(p.value.shape) for p in params}
    model.load(new)
    assert all(np.array_equal(p.value, new[p.name]) for p in model.parameters())


def test_run_records_plain_arrays_with_every_gradient(model):
    trace = model.run(feed(model))
    assert trace.layers[-1].name == "loss" and isinstance(trace.loss, float)
    assert all("output" in l.tensors and "grad_output" in l.tensors for l in trace.layers)
    arrays = [v for l in trace.layers for v in l.tensors.values()] + [p.grad for p in trace.params]
    assert all(type(a) is np.ndarray for a in arrays)
    assert all(p.grad.shape == p.value.shape for p in trace.params)


def test_two_runs_are_bitwise_identical(model):
    first, second = model.run(feed(model)), model.run(feed(model))
    assert [l.name for l in first.layers] == [l.name for l in second.layers]
    for a, b in zip(first.layers, second.layers):
        assert all(np.array_equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_forced_output_reaches_the_layers_after_it_while_the_layer_keeps_its_own(model):
    plain = model.run(feed(model))
    first = plain.layers[0]
    own = canonical(first.tensors["output"], first.layouts.get("output", ""))
    replay = model.run(feed(model), Forcing(outputs={first.name: [np.full_like(own, 0.5)]}))
    assert np.array_equal(replay.layers[0].tensors["output"], first.tensors["output"])
    assert replay.loss != plain.loss
