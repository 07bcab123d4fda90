"""A hand-written NumPy loss, called whatever its signature, and which reduction its gradient belongs to.

Taken as they come: a function ``loss(logits, targets) -> (value, dlogits)`` (cs231n's ``softmax_loss``); an object
whose value comes from ``forward``, ``loss`` or calling it, and whose gradient from ``backward``, ``gradient``,
``grad``, ``derivative`` or ``prime`` (called with nothing, or again with the prediction and targets; nnfs's
``backward(dvalues, y_true)`` receives the loss's own ``output`` when it keeps one), arguments in either order
(``(y_true, y_pred)`` is recognised by its names). Per-sample values are averaged, and it is said when the gradient
is not that of what the value reports: ``reduction`` measures it along the gradient's own direction.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from layerdiff.errors import ModelFileError

VALUE_METHODS = ("forward", "loss", "__call__")
GRADIENT_METHODS = ("backward", "gradient", "grad", "derivative", "prime")
TARGETS_FIRST = ("y_true", "y", "target", "targets", "labels", "label", "y_target", "actual", "truth")


def call(loss: Any, logits: np.ndarray, targets: Any, source: str) -> tuple[float, np.ndarray, Callable[[np.ndarray], float]]:
    """The loss's value (averaged over samples), its gradient on ``logits``, and the value as a function of logits."""
    if inspect.isfunction(loss) or inspect.ismethod(loss) or (callable(loss) and _method(loss, GRADIENT_METHODS) is None):
        value, dlogits = _pair(loss, logits, targets, source)

        def of(x: np.ndarray) -> float:
            return _mean(_pair(loss, x, targets, source)[0])

        return _mean(value), np.asarray(dlogits), of
    value_method = _method(loss, VALUE_METHODS)
    gradient_method = _method(loss, GRADIENT_METHODS)
    if value_method is None or gradient_method is None:
        kind = "value" if value_method is None else "gradient"
        names = VALUE_METHODS if value_method is None else GRADIENT_METHODS
        raise ModelFileError(
            f"The loss in {source} ({type(loss).__name__}) has no method giving its {kind} (looked for "
            f"{', '.join(names)}). Give loss(logits, targets) -> (value, dlogits), or an object with forward and backward."
        )
    value = np.asarray(_ordered(value_method, logits, targets))
    dlogits = _gradient(loss, gradient_method, logits, targets, source)

    def value_of(x: np.ndarray) -> float:
        return _mean(_ordered(value_method, x, targets))

    return _mean(value), dlogits, value_of


def _pair(loss: Callable[..., Any], logits: np.ndarray, targets: Any, source: str) -> tuple[Any, Any]:
    returned = _ordered(loss, logits, targets)
    if not isinstance(returned, tuple) or len(returned) != 2:
        raise ModelFileError(
            f"The loss function in {source} returned {type(returned).__name__}; a loss function must return "
            "(value, dlogits). A loss that gives its gradient apart is an object with forward(...) and backward()."
        )
    return returned


def _method(loss: Any, names: tuple[str, ...]) -> Callable[..., Any] | None:
    for name in names:
        method = getattr(loss, name, None)
        if callable(method) and (name != "__call__" or not isinstance(loss, type)):
            return method  # type: ignore[no-any-return]
    return None


def _required(f: Callable[..., Any]) -> list[str]:
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        return ["x", "y"]
    return [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _ordered(f: Callable[..., Any], prediction: Any, targets: Any) -> Any:
    """``f(prediction, targets)``, or ``f(targets, prediction)`` when its first argument is named as targets are."""
    names = _required(f)
    if len(names) == 1:
        return f(prediction)
    if names and names[0].lower() in TARGETS_FIRST:
        return f(targets, prediction)
    return f(prediction, targets)


def _gradient(loss: Any, method: Callable[..., Any], logits: np.ndarray, targets: Any, source: str) -> np.ndarray:
    if not _required(method):
        returned = method()
    else:
        # nnfs: backward(dvalues, y_true), dvalues being the fused softmax's output when it keeps one.
        returned = _ordered(method, getattr(loss, "output", logits) if method.__name__ == "backward" else logits, targets)
    if isinstance(returned, tuple):
        returned = returned[0]
    if returned is None:
        returned = next((getattr(loss, a) for a in ("dinputs", "dinput", "dX", "dx", "grad_input") if getattr(loss, a, None) is not None), None)
    if returned is None:
        raise ModelFileError(
            f"The loss in {source} ({type(loss).__name__}): {method.__name__} returned nothing and set no dinputs. "
            "Return the gradient on the logits."
        )
    return np.asarray(returned)


def _mean(value: Any) -> float:
    value = np.asarray(value, dtype=np.float64)
    return float(value.mean() if value.ndim else value)  # per-sample losses, which nnfs averages in Loss.calculate


def reduction(value_of: Callable[[np.ndarray], float], logits: np.ndarray, dlogits: np.ndarray) -> str:
    """How the gradient relates to the value: "" when it is the value's gradient; else what it is.

    The value's slope along the gradient's own direction, measured by central differences, against the gradient's
    norm: 1 when they belong together, 1/N when the gradient is that of the sum and the value the mean.
    """
    g = np.asarray(dlogits, dtype=np.float64)
    norm = float(np.linalg.norm(g))
    if norm == 0 or not np.all(np.isfinite(g)):
        return ""
    x = np.asarray(logits, dtype=np.float64)
    h = 1e-5 * max(1.0, float(np.linalg.norm(x)) / np.sqrt(x.size))
    try:
        slope = (value_of(x + h * g / norm) - value_of(x - h * g / norm)) / (2 * h)
    except Exception:
        return ""  # the value cannot be taken again: nothing is said
    ratio = slope / norm
    n = len(x) if x.ndim else 1
    if abs(ratio - 1) < 0.02 or n <= 1:
        return ""
    if abs(ratio * n - 1) < 0.02:
        return f"its gradient is that of the sum over the batch of {n} while its value is the mean (the gradient is {n} x the value's)"
    if abs(ratio / n - 1) < 0.02:
        return f"its gradient is that of the mean over the batch of {n} while its value is the sum (the gradient is 1/{n} of the value's)"
    return f"its gradient is {1 / ratio:.3g} x the gradient of its value"
