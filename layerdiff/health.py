"""One network's health from one recording: gradient/weight ratios, vanishing and exploding gradients, NaN/Inf and
where they start, saturated sigmoid/tanh units, dead ReLUs. Pure NumPy over a dump (or a trace in memory).

Every threshold is a module constant; the README says where each comes from.
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np

from layerdiff.records import Recording
from layerdiff.results import Flag, Health, LayerHealth, NonFinite, ParamHealth

# ‖grad‖/‖w‖ of a weight tensor: below, one step at any sane learning rate moves it by nothing; at or above, a step
# of lr = 1 would move it by its own size.
SLOW_RATIO = 1e-5
UNSTABLE_RATIO = 1.0
# ‖Δw‖/‖w‖ = lr·‖grad‖/‖w‖ per step: about 1e-3 is healthy (cs231n, "ratio of weights:updates"); a decade either way
# is flagged.
UPDATE_BAND = (1e-4, 1e-2)
# RMS of the gradient arriving at the first layer over that at the last: two decades lost or gained through depth.
VANISHING_RATIO = 1e-3
EXPLODING_RATIO = 1e3
# A sigmoid unit is saturated where σ'(x) = s(1-s) < 0.01 (|x| > 4.6), a tanh unit where |tanh(x)| > 0.99 (|x| > 2.65);
# a layer is flagged when more than this fraction of its activations are.
SIGMOID_SLOPE = 0.01
TANH_LEVEL = 0.99
SATURATED_FRACTION = 0.10
# ReLU: a unit (feature; channel of an N C ... tensor) is dead when it is zero for every example of the batch.
DEAD_FRACTION = 0.25
INACTIVE_FRACTION = 0.90
# With fewer samples a healthy unit is off for all of them by chance (2^-N): too few to call a unit dead.
DEAD_MIN_SAMPLES = 7

ACTIVATIONS = ("relu", "sigmoid", "tanh", "none")
_KIND = {"relu": r"relu6?", "sigmoid": r"sigmoid|logistic", "tanh": r"tanh"}
_NAME = {"relu": r"relu6?", "sigmoid": r"sig|sigmoid|logistic", "tanh": r"tanh"}


def activation_of(name: str, kind: str, given: dict[str, str] | None = None) -> str:
    """The activation a layer applies, from ``given`` (name -> kind), its class name, or its name.

    >>> activation_of("relu1", "tap"), activation_of("0", "Sigmoid"), activation_of("fc1", "Linear")
    ('relu', 'sigmoid', '')
    """
    if given and name in given:
        return "" if given[name] == "none" else given[name]
    for act, pattern in _KIND.items():
        if re.fullmatch(pattern, kind, flags=re.IGNORECASE):
            return act
    last = name.split("#")[0].split(".")[-1]
    for act, pattern in _NAME.items():
        if re.fullmatch(rf"(?:{pattern})[_\d]*", last, flags=re.IGNORECASE):
            return act
    return ""


def inspect(
    rec: Recording,
    *,
    lr: float | None = None,
    activations: dict[str, str] | None = None,
    allow_neg_inf: Iterable[str] = (),
) -> Health:
    """Read a recording's health.

    Args:
        rec: a ``store.Dump`` or ``records.InMemory``.
        lr: a learning rate, to report ‖Δw‖/‖w‖ of one plain SGD step.
        activations: layer name -> relu, sigmoid, tanh or none, where the kind or name does not say.
        allow_neg_inf: layers whose forward values may hold -inf (attention masks).

    Returns:
        A ``Health``; ``health.flags`` lists each problem found.
    """
    # A parameter without a gradient (its backward raised before reaching it) has no ratio to judge.
    params = [_param(rec, name, lr) for name in rec.param_names() if rec.param_info(name) is not None]
    layers = [_layer(rec, info.index, activations) for info in rec.layers]
    origin = nonfinite_origin(rec, allow_neg_inf)
    span = [h for h in layers if h.grad_rms is not None and np.isfinite(h.grad_rms)]
    ratio = None
    if len(span) >= 2 and span[-1].grad_rms:
        ratio = float(span[0].grad_rms / span[-1].grad_rms) if span[0].grad_rms is not None else None
    health = Health(
        rec.source, params, layers, count_nonfinite(rec), origin["forward"], origin["backward"], ratio,
        (span[0].name, span[-1].name) if len(span) >= 2 else None, lr,
        random_upstream=rec.info.random_upstream,
    )
    health.flags = _flags(health)
    return health


def _norm(a: np.ndarray) -> float:
    with np.errstate(over="ignore"):  # entries past 1e154 square to inf: the norm is inf, not a warning
        return float(np.linalg.norm(a.ravel().astype(np.float64, copy=False)))


def _param(rec: Recording, name: str, lr: float | None) -> ParamHealth:
    p = rec.param(name)
    w = p.value
    g = p.grad if p.grad is not None else np.zeros_like(w)
    wn, gn = _norm(w), _norm(g)
    ratio = gn / wn if wn > 0 and np.isfinite(wn) and np.isfinite(gn) else None
    bias = sum(d > 1 for d in w.shape) <= 1
    return ParamHealth(name, p.layer, tuple(w.shape), wn, gn, ratio, None if ratio is None or lr is None else lr * ratio, bias)


def _layer(rec: Recording, index: int, activations: dict[str, str] | None) -> LayerHealth:
    info = rec.layers[index]
    health = LayerHealth(index, info.name, info.kind, activation_of(info.name, info.kind, activations), None, None, None)
    out = info.tensors.get("output")
    if "grad_output" in info.tensors and out is not None and len(out.shape) > 0:
        g = rec.tensor(index, "grad_output")
        if g.size and np.isfinite(g).all():
            health.grad_norm = _norm(g)
            health.grad_rms = health.grad_norm / np.sqrt(g.size)
            health.zero_fraction = float(np.mean(g == 0))
    if health.activation and out is not None and len(out.shape) > 0:
        y = rec.tensor(index, "output")
        finite = y[np.isfinite(y)]
        if finite.size == 0:
            return health
        if health.activation == "sigmoid":
            with np.errstate(over="ignore"):  # an output far from (0, 1) is no sigmoid's, and saturated
                health.saturated = float(np.mean(finite * (1 - finite) < SIGMOID_SLOPE))
        elif health.activation == "tanh":
            health.saturated = float(np.mean(np.abs(finite) > TANH_LEVEL))
        else:
            off = y == 0
            health.inactive = float(np.mean(off))
            # Units are features of a 2-D output, channels (axis 1) of an N C ... one.
            units = off.reshape(off.shape[0], -1) if off.ndim <= 2 else np.moveaxis(off, 1, 0).reshape(off.shape[1], -1).T
            if off.ndim >= 2:
                health.dead, health.samples = float(np.mean(units.all(axis=0))), units.shape[0]
    return health


def _counts(a: np.ndarray) -> tuple[int, int, int]:
    if not np.issubdtype(a.dtype, np.floating) or np.isfinite(a).all():
        return 0, 0, 0
    return int(np.isnan(a).sum()), int(np.isposinf(a).sum()), int(np.isneginf(a).sum())


def _clean(counts: tuple[int, int, int], neg_inf_allowed: bool) -> bool:
    nan, pos, neg = counts
    return nan == 0 and pos == 0 and (neg == 0 or neg_inf_allowed)


def count_nonfinite(rec: Recording) -> list[NonFinite]:
    """NaN, +Inf and -Inf counts of every layer tensor and parameter that holds any."""
    found = []
    for info in rec.layers:
        for key in info.tensors:
            c = _counts(rec.tensor(info.index, key))
            if any(c):
                found.append(NonFinite(f"{info.name} {key}", *c))
    for name in rec.param_names():
        p = rec.param(name)
        for what, a in (("value", p.value), ("grad", p.grad)):
            c = (0, 0, 0) if a is None else _counts(a)
            if any(c):
                found.append(NonFinite(f"param {name} {what}", *c))
    return found


def _tensor_counts(rec: Recording, index: int, key: str) -> tuple[int, int, int]:
    """NaN, +Inf, -Inf counts; one NaN for a tensor a stats-only dump knows only to be non-finite."""
    return _counts(rec.tensor(index, key)) if rec.layers[index].tensors[key].stored else (1, 0, 0)


def _grad_clean(rec: Recording, name: str) -> bool:
    info = rec.param_info(name)
    if info is None:
        return True
    if info.finite is not None:  # noted when the dump was written: the gradient need not be read
        return info.finite
    grad = rec.param_grad(name)
    return grad is None or _clean(_counts(grad), False)


def nonfinite_origin(rec: Recording, allow_neg_inf: Iterable[str] = ()) -> dict[str, str | None]:
    """Where NaN/Inf first appear: ``forward``, the first layer with finite inputs and a non-finite output;
    ``backward``, the first layer from the loss with a finite output gradient and a non-finite input or parameter
    gradient. ``"inputs"`` when the network's inputs already hold them, ``"before X"``/``"after X"`` when code
    that no layer records made them. Forward values of the layers in ``allow_neg_inf`` may hold -inf.
    """
    allowed = set(allow_neg_inf)

    def clean(index: int, kind: str) -> bool:
        info = rec.layers[index]
        keys = [k for k in info.tensors if k.split(".")[0] == kind]
        neg_inf_allowed = not kind.startswith("grad") and info.name in allowed
        return all(rec.finite(index, k) or _clean(_tensor_counts(rec, index, k), neg_inf_allowed) for k in keys)

    def params_clean(index: int) -> bool:
        return all(_grad_clean(rec, name) for name in rec.layers[index].params)

    forward = backward = None
    for info in rec.layers:
        if not clean(info.index, "output"):
            forward = info.name if clean(info.index, "input") else "inputs" if info.index == 0 else f"before {info.name}"
            break
    for info in reversed(rec.layers):
        if not clean(info.index, "grad_input") or not params_clean(info.index):
            backward = info.name if clean(info.index, "grad_output") else f"after {info.name}"
            break
    return {"forward": forward, "backward": backward}


def _flags(h: Health) -> list[Flag]:
    """The problems, each once, where it starts; a line of each reads ``where: message``."""
    flags = []
    if h.forward_origin:
        after = f"; backward: first at {h.backward_origin}" if h.backward_origin else ""
        flags.append(Flag("nonfinite", h.forward_origin, f"NaN/Inf start here in the forward pass (finite in, non-finite out){after}"))
    elif h.backward_origin:
        flags.append(Flag("nonfinite", h.backward_origin, "NaN/Inf start here in the backward pass (finite gradient in, non-finite out)"))
    weights = [p for p in h.params if not p.bias and not h.random_upstream]
    for p in weights:
        if p.ratio is not None and p.ratio < SLOW_RATIO:
            flags.append(Flag("slow", p.name, f"learns slowly: ‖grad‖/‖w‖ = {p.ratio:.1e} < {SLOW_RATIO:g}"))
        elif p.ratio is not None and p.ratio >= UNSTABLE_RATIO:
            flags.append(Flag("unstable", p.name, f"unstable: ‖grad‖/‖w‖ = {p.ratio:.1e} >= {UNSTABLE_RATIO:g}"))
    small = [p for p in weights if p.update is not None and p.update < UPDATE_BAND[0]]
    large = [p for p in weights if p.update is not None and p.update > UPDATE_BAND[1]]
    for side, outside in (("small", small), ("large", large)):
        if outside:
            listed = ", ".join(f"{p.name} {p.update:.0e}" for p in outside)
            flags.append(Flag("update", f"lr {h.lr:g}", f"steps too {side}: ‖Δw‖/‖w‖ {listed}"))
    if h.depth_ratio is not None and h.depth_span is not None:
        first, last = h.depth_span
        if h.depth_ratio < VANISHING_RATIO:
            # The weights that learn slowly are what vanishing gradients do: one problem, named once.
            slow = [f.where for f in flags if f.kind == "slow"]
            flags = [f for f in flags if f.kind != "slow"]
            message = f"vanishing gradients: RMS here is {h.depth_ratio:.1e} of that at {last}"
            flags.append(Flag("vanishing", first, message + (f"; learning slowly: {', '.join(slow)}" if slow else "")))
        elif h.depth_ratio > EXPLODING_RATIO:
            flags.append(Flag("exploding", first, f"exploding gradients: RMS here is {h.depth_ratio:.1e} times that at {last}"))
    for layer in h.layers:
        if layer.saturated is not None and layer.saturated > SATURATED_FRACTION:
            limit = f"σ' < {SIGMOID_SLOPE:g}" if layer.activation == "sigmoid" else f"|tanh| > {TANH_LEVEL:g}"
            flags.append(Flag("saturated", layer.name, f"{layer.activation} saturated: {layer.saturated:.0%} of activations ({limit})"))
        dead = layer.dead is not None and layer.dead > DEAD_FRACTION and layer.samples >= DEAD_MIN_SAMPLES
        if dead or (layer.inactive is not None and layer.inactive > INACTIVE_FRACTION):
            flags.append(Flag("dead", layer.name, f"dead ReLU: {layer.dead or 0:.0%} of units off for all {layer.samples} samples, {layer.inactive:.0%} of activations off"))
    return flags
