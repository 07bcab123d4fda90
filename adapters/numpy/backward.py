"""One layer's backward call, however the layer hands its parameter gradients back.

- A ``backward(dout, learning_rate)`` that applies its own update and keeps no gradient (tutorial code): called
  with a learning rate of 1, the gradient is the weight change, and the weights are put back. The rule is checked
  on a copy of the layer taken before the call: the change must double when the gradient arriving doubles (plain
  SGD, or momentum's first step from rest), else it is no gradient (Adam, weight decay, clipping) and the run stops;
  a change that differs on a second call with the same gradient keeps state (momentum), which is said.
- Gradients under names nobody can guess (``delta_w``): each parameter without a named gradient is paired with the
  one array of its shape that backward wrote; several candidates are an error naming them.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from layerdiff.adapters.numpy.network import Slot
from layerdiff.errors import ModelFileError
from layerdiff.layout import squeezed

LEARNING_RATES = ("learning_rate", "lr", "eta", "step_size", "learningRate", "alpha")
WRITTEN_DEPTH = 2  # how deep into a layer's held objects written arrays are looked for


@dataclass
class Stepped:
    returned: Any  # what backward returned
    grads: dict[str, np.ndarray] = field(default_factory=dict)  # by parameter key, where a name did not say
    notes: dict[str, str] = field(default_factory=dict)  # by parameter key: how its gradient was found


def learning_rate_argument(backward: Callable[..., Any], declared: str | None, where: str) -> str | None:
    """The name of ``backward``'s learning-rate argument: the file's ``update_in_backward``, or one named as
    learning rates are; None when it takes none."""
    params = argument_names(backward)
    if params is None:
        return None
    if declared is not None:
        if declared not in params:
            raise ModelFileError(
                f"update_in_backward = {declared!r}, but the backward of {where} takes ({', '.join(params)}). Name its "
                "learning-rate argument."
            )
        return declared
    return next((p for p in params[1:] if p in LEARNING_RATES), None)


_ARGUMENTS: dict[Any, list[str] | None] = {}


def argument_names(f: Callable[..., Any]) -> list[str] | None:
    """The names of a function's arguments (a bound method's without self), looked up once per function."""
    key = getattr(f, "__func__", f)
    if key not in _ARGUMENTS:
        try:
            _ARGUMENTS[key] = list(inspect.signature(f).parameters)
        except (TypeError, ValueError):
            _ARGUMENTS[key] = None
    return _ARGUMENTS[key]


def step(
    obj: Any,
    grads: list[np.ndarray],
    slots: Callable[[Any], dict[str, Slot]],
    named: Callable[[str], bool],
    lr: str | None,
    where: str,
) -> Stepped:
    """Call ``obj.backward(*grads)`` and find the parameter gradients no name gives.

    ``slots(obj)`` finds an object's parameters by key (on a copy too); ``named(key)``: whether a name gives that
    parameter's gradient (asked before and after the call); ``lr``: the learning-rate argument, when backward
    updates the weights itself.
    """
    own = slots(obj)
    if lr is not None and own:
        return _updating(obj, grads, slots, lr, where)
    maybe = [k for k in own if not named(k)]
    before = _arrays(obj, WRITTEN_DEPTH) if maybe else {}
    returned = obj.backward(*grads, **({lr: 1.0} if lr else {}))
    stepped = Stepped(returned)
    unnamed = [k for k in maybe if not named(k)]
    if unnamed:
        written = _written(before, _arrays(obj, WRITTEN_DEPTH), own, returned)
        for key in unnamed:
            found = _by_shape(key, np.shape(own[key].get()), written, where)
            if found is not None:
                stepped.grads[key] = np.array(written.pop(found), copy=True)
                stepped.notes[key] = f"gradient from {found} (by shape: the one array of its shape that backward wrote)"
    return stepped


def _updating(obj: Any, grads: list[np.ndarray], slots: Callable[[Any], dict[str, Slot]], lr: str, where: str) -> Stepped:
    probe = copy.deepcopy(obj)  # the layer as it was, for checking the rule
    changes, returned = _change(obj, grads, slots, lr)
    doubled, _ = _change(probe, [2 * g for g in grads], slots, lr)
    for key, delta in changes.items():
        if not np.allclose(doubled[key], 2 * delta, rtol=1e-6, atol=1e-12 * (1 + float(np.abs(delta).max(initial=0)))):
            ratio = float(np.linalg.norm(doubled[key]) / max(float(np.linalg.norm(delta)), 1e-300))
            raise ModelFileError(
                f"The backward of {where} updates '{key}' by a rule other than plain SGD: when the gradient arriving "
                f"doubles, the change of '{key}' grows {ratio:.3g} times, not 2 (a normalized step such as Adam's, weight "
                "decay, or clipping), so it is not a gradient. layerdiff takes the gradient from w -= lr * grad only: "
                "keep the gradient in the layer (self.dW = ...) and update outside backward."
            )
    again, _ = _change(probe, grads, slots, lr)
    stateful = [k for k, delta in changes.items() if not np.allclose(again[k] * 2, doubled[k], rtol=1e-6, atol=1e-12)]
    notes = {
        key: "gradient = the change of backward(dout, " + f"{lr}=1)"
        + (" (a rule that keeps state, such as momentum: its first step from rest is the gradient)" if key in stateful else "")
        for key in changes
    }
    return Stepped(returned, changes, notes)


def _change(obj: Any, grads: list[np.ndarray], slots: Callable[[Any], dict[str, Slot]], lr: str) -> tuple[dict[str, np.ndarray], Any]:
    """What ``backward(*grads, lr=1)`` subtracts from each parameter of ``obj``; the parameters are put back."""
    own = slots(obj)
    before = {k: np.array(s.get(), copy=True) for k, s in own.items()}
    returned = obj.backward(*grads, **{lr: 1.0})
    after = slots(obj)
    changes = {}
    for key, was in before.items():
        now = np.asarray(after[key].get()) if key in after else was
        changes[key] = was - now
        if key in after:
            current = after[key].get()
            if isinstance(current, np.ndarray) and current.shape == was.shape and current.flags.writeable:
                current[...] = was
            else:
                after[key].set(was)
    return changes, returned


def _arrays(obj: Any, depth: int, prefix: str = "") -> dict[str, tuple[int, np.ndarray]]:
    """The arrays an object holds (attributes, dict entries, held objects'), by path, each with its identity."""
    found: dict[str, tuple[int, np.ndarray]] = {}
    if not hasattr(obj, "__dict__") or isinstance(obj, np.ndarray):
        return found
    for attr, value in vars(obj).items():
        path = prefix + attr
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            found[path] = (id(value), value.copy())
        elif isinstance(value, dict):
            found.update({f"{path}[{k!r}]": (id(v), v.copy()) for k, v in value.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"})
        elif depth > 0 and hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value):
            found.update(_arrays(value, depth - 1, path + "."))
    return found


def _written(
    before: dict[str, tuple[int, np.ndarray]], after: dict[str, tuple[int, np.ndarray]], params: dict[str, Slot], returned: Any
) -> dict[str, np.ndarray]:
    """The arrays backward made or changed, less the parameters and the input gradient it returned."""
    own = {id(s.get()) for s in params.values()}
    handed = {id(r) for r in (returned if isinstance(returned, (tuple, list)) else [returned])}
    written = {}
    for path, (ident, value) in after.items():
        was = before.get(path)
        if ident in own or ident in handed:
            continue
        if was is None or was[0] != ident or was[1].shape != value.shape or not np.array_equal(was[1], value):
            written[path] = value
    return written


def _by_shape(key: str, shape: tuple[int, ...], written: dict[str, np.ndarray], where: str) -> str | None:
    """The one written array of ``shape``; with several, the one whose name holds the parameter's."""
    fits = [p for p, v in written.items() if squeezed(v.shape) == squeezed(tuple(shape))]
    if len(fits) > 1:
        leaf = key.rpartition(".")[2].lower()
        fits = [p for p in fits if leaf in p.rpartition(".")[2].lower()] or fits
    if len(fits) > 1:
        raise ModelFileError(
            f"Cannot tell which array backward wrote is the gradient of '{key}' in {where}: {', '.join(fits)} all have "
            f"its shape {tuple(shape)}. Say it with grads_of(layer) in the model file, e.g. "
            f"def grads_of(layer): return {{'{key}': layer.{fits[0]}}}."
        )
    return fits[0] if fits else None
