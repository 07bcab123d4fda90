"""The Python API's checks of one network: gradcheck, inspect and overfit (re-exported by ``layerdiff.api``)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from layerdiff import modelfile, runner, store
from layerdiff import gradcheck as _gradcheck
from layerdiff import health as _health
from layerdiff import overfit as _overfit
from layerdiff.records import InMemory
from layerdiff.results import GradCheck, Health
from layerdiff.results import Overfit as OverfitResult


def gradcheck(
    model: Any,
    *,
    inputs: Any = None,
    input_shape: Any = None,
    targets: Any = None,
    loss: Any = None,
    samples: int = _gradcheck.SAMPLES,
    full: bool = False,
    at: dict[str, list[tuple[int, ...]]] | None = None,
    seed: int = 0,
) -> GradCheck:
    """``layerdiff gradcheck``: every layer's and parameter's gradient against central differences, in float64.

    Args:
        model: a model file's path, or a live network (copied first; ``inputs``/``input_shape``, ``targets`` and
            ``loss`` then say what the file would).
        samples: random coordinates per tensor, beside the largest-gradient and zero-gradient ones.
        full: every coordinate of every tensor.
        at: extra coordinates, by parameter name or layer name (that layer's input): ``{"fc1.W": [(3, 7)]}``.

    Returns:
        A ``GradCheck``; ``result.passed`` is False when a layer's gradient is wrong, ``result.culprits`` names it.

    >>> import numpy as np
    >>> class Square:
    ...     def forward(self, x): self.x = x; return x * x
    ...     def backward(self, d): return d * self.x      # forgot the 2
    >>> gradcheck([Square()], input_shape=(2, 3)).culprits
    ['0']
    """
    return _gradcheck.gradcheck(_model(model, inputs=inputs, input_shape=input_shape, targets=targets, loss=loss), samples=samples, full=full, at=at, seed=seed)


def inspect(
    path: str | os.PathLike[str],
    *,
    lr: float | None = None,
    activations: dict[str, str] | None = None,
    allow_neg_inf: list[str] | tuple[str, ...] = (),
    dtype: str = "float64",
    seed: int = 0,
) -> Health:
    """``layerdiff inspect``: one network's health from a dump (or a model file, run once first).

    Args:
        lr: a learning rate, to report ‖Δw‖/‖w‖ of one SGD step.
        activations: layer name -> relu, sigmoid, tanh or none, where the layer's kind or name does not say.
        allow_neg_inf: layers whose forward values may hold -inf (attention masks).

    Returns:
        A ``Health``; ``result.flags`` lists the problems found, empty for a healthy network.
    """
    options: dict[str, Any] = {"lr": lr, "activations": activations, "allow_neg_inf": allow_neg_inf}
    if not store.is_dump(path) and Path(path).suffix == ".py":
        model = modelfile.load(path)
        return _health.inspect(InMemory(runner.run_one(model, dtype, seed), model.source), **options)
    with store.Dump(path) as recorded:
        return _health.inspect(recorded, **options)


def overfit(
    model_a: Any,
    model_b: Any = None,
    *,
    steps: int = 200,
    lr: float = 0.1,
    batch: int = 2,
    dtype: str = "float64",
    seed: int = 0,
    param_map: dict[str, str] | None = None,
) -> OverfitResult:
    """``layerdiff overfit``: plain SGD on the first ``batch`` examples; whether the loss goes toward zero.

    With two models (paths or live networks, each copied), the second starts from the first's weights and both get
    the same batch: ``result.parted`` is the first step where their losses differ.
    """
    models = [_model(m) for m in (model_a, model_b) if m is not None]
    return _overfit.overfit(models, steps=steps, lr=lr, batch=batch, dtype=dtype, seed=seed, param_map=param_map)


def _model(x: Any, **declared: Any) -> modelfile.Model:
    """A model file's path, loaded; or a live network, copied so that the caller's stays as it is."""
    if isinstance(x, (str, os.PathLike)):
        return modelfile.load(x)
    return modelfile.from_object(copy.deepcopy(x), source=type(x).__name__, **declared)
