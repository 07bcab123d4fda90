"""Assertions for test suites: a custom layer against its reference implementation, or against a golden dump; and
``FakeAdapter``, a scriptable adapter for tests of layerdiff itself and of third-party adapters.

A failure's message is the report: the verdict, the culprits with their hints, and the tables. Under pytest, the
``layerdiff_golden`` fixture (``pytest_layerdiff``) calls ``assert_golden`` with paths from the rootdir and rewrites
the dumps when run with ``--layerdiff-update-golden``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from layerdiff.adapter import Feed, Forcing, Prepared, Spec
from layerdiff.api import Result, compare_models, compare_to_dump, dump_model
from layerdiff.capture import Forcer, finish, seeded_upstream
from layerdiff.records import LayerRecord, ParamRecord, Trace


def assert_same(model_a: Any, model_b: Any, **options: Any) -> Result:
    """Assert that two networks agree, layer by layer, in the forward and the backward pass.

    Args:
        model_a, model_b: live networks: a NumPy layer list or forward/backward object, a ``torch.nn.Module``…
        **options: ``compare_models``'s keywords: ``inputs`` or ``input_shape``, ``targets``, ``loss_a``,
            ``loss_b``, ``rtol``, ``layer_map``, ``param_map``, ``dtype``, ``seed``.

    Returns:
        The ``Result``, for further checks.

    Raises:
        AssertionError: they diverge; the message is the report.

    >>> class Double:
    ...     def forward(self, x): return 2 * x
    ...     def backward(self, d): return 2 * d
    >>> assert_same([Double()], [Double()], input_shape=(2, 3)).match
    True
    """
    __tracebackhide__ = True
    result = compare_models(model_a, model_b, **options)
    if not result.match:
        raise AssertionError(_message(result))
    return result


def assert_golden(
    model: Any,
    golden: str | os.PathLike[str],
    *,
    inputs: Any = None,
    input_shape: Any = None,
    targets: Any = None,
    loss: Any = None,
    rtol: float | None = None,
    update: bool = False,
) -> Result | None:
    """Assert that a network computes what a golden dump recorded, run on the dump's weights, inputs and upstream
    gradient (side A is the dump).

    Args:
        model: the live network.
        golden: the dump, written by ``layerdiff dump`` or by ``update``.
        inputs, input_shape, targets: what to feed the model when writing the dump; checking uses the dump's.
        loss: the model's loss, when the dump was made with one.
        update: write (or rewrite) the golden dump from the model as it is now, instead of checking.

    Returns:
        The ``Result`` of the check; None after an update.

    Raises:
        AssertionError: the model diverges from the dump (the message is the report), or the dump is missing.
    """
    __tracebackhide__ = True
    path = Path(golden)
    if update:
        dump_model(model, path, inputs=inputs, input_shape=input_shape, targets=targets, loss=loss, force=True)
        return None
    if not path.exists():
        raise AssertionError(
            f"Golden dump {path} does not exist. Write it with `pytest --layerdiff-update-golden`, "
            f"or from a model file with `layerdiff dump MODEL.py -o {path}`."
        )
    result = compare_to_dump(path, model, loss=loss, rtol=rtol)
    if not result.match:
        raise AssertionError(_message(result))
    return result


def _message(result: Result) -> str:
    culprits = result.comparison.culprits or []
    names = ", ".join(sorted({c.layer_a for c in culprits})) or "no single layer"
    return f"layerdiff: the implementations diverge; culprit: {names}\n{result}"


@dataclass
class FakeLayer:
    """One layer of a ``FakeNet``: ``y = fn(x, w)``, and ``grad(x, w, dy) -> (dx, dw)``; ``w`` may be None."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray | None], np.ndarray]
    grad: Callable[[np.ndarray, np.ndarray | None, np.ndarray], tuple[np.ndarray, np.ndarray | None]]
    weight: np.ndarray | None = None

    @staticmethod
    def dense(name: str, n_in: int, n_out: int, seed: int = 0) -> FakeLayer:
        """``x @ W``, its weight (in, out) seeded."""
        w = np.random.default_rng(seed).standard_normal((n_in, n_out)) / np.sqrt(n_in)
        return FakeLayer(name, lambda x, w: x @ _given(w), lambda x, w, dy: (dy @ _given(w).T, x.T @ dy), w)

    @staticmethod
    def tanh(name: str) -> FakeLayer:
        return FakeLayer(name, lambda x, w: np.tanh(x), lambda x, w, dy: (dy * (1 - np.tanh(x) ** 2), None))


def _given(w: np.ndarray | None) -> np.ndarray:
    assert w is not None  # a dense FakeLayer always has its weight
    return w


@dataclass
class FakeNet:
    """A chain of ``FakeLayer``: the model ``FakeAdapter`` claims."""

    layers: list[FakeLayer]


class FakeAdapter:
    """A scriptable adapter, beside the real ones as httpx ships ``MockTransport`` beside its transports.

    It runs a ``FakeNet`` as any adapter runs its framework's model (through ``layerdiff.capture``'s kit), so that
    tests of the core need no framework, and the author of an adapter has a reference that honours the protocol,
    forcing included. ``honours_forcing=False`` makes it ignore forced values, as a broken adapter would.

    >>> from layerdiff.adapter import register
    >>> net = FakeNet([FakeLayer.dense("fc1", 3, 4), FakeLayer.tanh("act")])
    >>> with register(FakeAdapter()):
    ...     compare_models(net, net, input_shape=(2, 3)).match
    True
    """

    name = "fake"

    def __init__(self, honours_forcing: bool = True) -> None:
        self.honours_forcing = honours_forcing

    def claims(self, obj: Any) -> bool:
        return isinstance(obj, FakeNet)

    def version(self) -> str:
        return "1"

    def prepare(self, obj: Any, spec: Spec, dtype: str) -> Prepared:
        if dtype == "float64":
            for layer in obj.layers:
                layer.weight = None if layer.weight is None else layer.weight.astype(np.float64)
        return Prepared(obj)

    def parameters(self, model: Any, spec: Spec) -> list[ParamRecord]:
        return [ParamRecord(f"{l.name}.w", l.name, "in out", l.weight.copy()) for l in model.layers if l.weight is not None]

    def load_parameters(self, model: Any, spec: Spec, values: dict[str, np.ndarray]) -> None:
        for layer in model.layers:
            if f"{layer.name}.w" in values:
                layer.weight = np.array(values[f"{layer.name}.w"])

    def run(self, model: Any, spec: Spec, feed: Feed, forcing: Forcing | None = None) -> Trace:
        forcer = Forcer(forcing if self.honours_forcing else None)
        records, x = [], feed.inputs[0]
        for layer in model.layers:
            y = layer.fn(x, layer.weight)
            records.append(LayerRecord(layer.name, "Fake", {"input": x, "output": y}))
            forced = forcer.values("output", layer.name, [y.shape])
            x = y if forced is None else forced[0]
        value, upstream = seeded_upstream(feed, [x])  # no loss: a FakeNet is judged on a seeded upstream gradient
        dy = upstream[0]
        grads = {}
        for layer, record in zip(reversed(model.layers), reversed(records)):
            record.tensors["grad_output"] = dy
            forced = forcer.values("grad_output", layer.name, [dy.shape])
            dx, dw = layer.grad(record.tensors["input"], layer.weight, dy if forced is None else forced[0])
            record.tensors["grad_input"], dy = dx, dx
            if dw is not None:
                grads[f"{layer.name}.w"] = dw
        params = [replace(p, grad=grads.get(p.name)) for p in self.parameters(model, spec)]
        return finish(records, params, value, upstream, forcer)
