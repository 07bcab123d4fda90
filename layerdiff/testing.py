"""Assertions for test suites: a custom layer against its reference implementation, or against a golden dump.

A failure's message is the report: the verdict, the culprits with their hints, and the tables. Under pytest, the
``layerdiff_golden`` fixture (``pytest_layerdiff``) calls ``assert_golden`` with paths from the rootdir and rewrites
the dumps when run with ``--layerdiff-update-golden``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from layerdiff.api import Result, compare_models, compare_to_dump, dump_model


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
