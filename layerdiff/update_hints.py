"""What a difference in a training step looks like: an optimizer's update or state, or a buffer's update, tested
against what the usual mistakes leave, each said only when it fits.

An optimizer given the same gradient ``g`` and the same previous state on both sides leaves differences with a
shape: weight decay added to the gradient on one side only makes the moments differ by a multiple of the weights
(L2 against decoupled); another momentum or β makes a state entry differ by a multiple of its previous value; a
missing bias correction makes the whole update a constant ``(1 - β1^t) / √(1 - β2^t)`` times the other's. A batch
norm's running variance updated with the biased batch variance differs from PyTorch's by a multiple of
``var/(N-1)``, computed here from the layer's own input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from layerdiff.diagnose import Sides, describe
from layerdiff.optimizer import buffer_name
from layerdiff.sync import WeightLink

if TYPE_CHECKING:
    from layerdiff.updates import Stepped

FIT = 0.02  # relative residual of a fit under which it explains a difference (eps makes Adam's ratios inexact)
DECAYS = {"momentum_buffer": "momentum", "exp_avg": "β1", "exp_avg_sq": "β2"}


def fit(d: np.ndarray, basis: np.ndarray) -> float | None:
    """The ``c`` for which ``d ≈ c · basis``, when that explains ``d``; else None.

    >>> fit(np.array([2.0, 4.0]), np.array([1.0, 2.0])), fit(np.array([2.0, 1.0]), np.array([1.0, 2.0]))
    (2.0, None)
    """
    d, basis = np.asarray(d, dtype=np.float64).ravel(), np.asarray(basis, dtype=np.float64).ravel()
    norm = float(basis @ basis)
    if d.size < 2 or norm == 0 or not np.any(d):
        return None
    c = float(d @ basis) / norm
    return c if float(np.linalg.norm(d - c * basis)) <= FIT * float(np.linalg.norm(d)) else None


def _view(w: WeightLink, value: Any) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    return w.view(value) if value.ndim and value.size == int(np.prod(w.src_shape)) else value


def _betas(settings: dict[str, Any]) -> tuple[float, float] | None:
    betas = settings.get("betas")
    if isinstance(betas, (tuple, list)) and len(betas) == 2:
        return float(betas[0]), float(betas[1])
    return None


def optimizer(a: Stepped, b: Stepped, w: WeightLink, step: int, sources: tuple[str, str], differing: list[str]) -> str | None:
    """A sentence on why ``w``'s update differs, given the same gradient and previous state to both optimizers."""
    src_a, src_b = sources
    sa, sb = a.state.get(w.src, {}), b.state.get(w.dst, {})
    if "step" in differing:
        ta, tb = (_count(s["step"]) for s in (sa, sb))
        return f"the step count differs: {src_a} counts {ta}, {src_b} {tb} (a step counted twice, or not at all)."
    weights, grad = b.before[w.dst].astype(np.float64), b.grads.get(w.dst)
    for moment in [e for e in ("exp_avg", "momentum_buffer") if e in differing]:
        found = _l2(_view(w, sa[moment]) - sb[moment], weights, moment, a.settings, b.settings, sources)
        if found:
            return found
    previous = a.state_before.get(w.src, {})
    for entry in [e for e in differing if e in DECAYS and e in previous]:
        if grad is not None:
            found = _decay(entry, _view(w, sa[entry]) - sb[entry], _view(w, previous[entry]), grad, a.settings, b.settings, sources)
            if found:
                return found
    da = _view(w, a.after[w.src] - a.before[w.src])
    db = b.after[w.dst] - b.before[w.dst]
    t = _count(sb.get("step", sa.get("step", step)))
    found = _ratio(da, db, t, a.settings, b.settings, sources) or _decoupled(da - db, weights, sources)
    return found or describe(da, db.reshape(da.shape), Sides(f"{src_a}'s update of {w.src}", f"{src_b}'s"), 1e-6)


def _count(value: Any) -> int:
    return int(float(np.asarray(value, dtype=np.float64).reshape(-1)[0]))


def _l2(d: np.ndarray, weights: np.ndarray, entry: str, sa: dict[str, Any], sb: dict[str, Any], sources: tuple[str, str]) -> str | None:
    c = fit(d, weights)
    if c is None:
        return None
    l2, other = sources if c > 0 else sources[::-1]
    settings = sb if c > 0 else sa
    betas = _betas(sa) or _betas(sb)
    lam = abs(c) / (1 - betas[0]) if entry == "exp_avg" and betas else abs(c)
    theirs = (
        f"decoupled: weight_decay {settings['weight_decay']:g} taken from the weights"
        if float(settings.get("weight_decay") or 0) > 0
        else "decoupled, or none"
    )
    return (
        f"weight decay applied as L2 vs decoupled: {l2}'s {entry} holds a decay of the weights ({abs(c):.2g}·w: "
        f"λ {lam:.2g} added to the gradient, L2); {other}'s does not ({theirs})."
    )


def _decay(entry: str, d: np.ndarray, previous: np.ndarray, grad: np.ndarray, sa: dict[str, Any], sb: dict[str, Any], sources: tuple[str, str]) -> str | None:
    """Another decay rate: ``buf = μ·buf + g`` differs by ``Δμ·buf``; an average ``m = β·m + (1-β)·g`` by
    ``Δβ·(m - g)``, and ``v`` by ``Δβ·(v - g²)``."""
    target = {"momentum_buffer": previous, "exp_avg": previous - grad, "exp_avg_sq": previous - grad * grad}[entry]
    c = fit(d, target)
    if c is None:
        return None
    name = DECAYS[entry]
    values = [_decay_setting(name, s) for s in (sa, sb)]
    said = f": {values[0]:g} in {sources[0]}, {values[1]:g} in {sources[1]}" if None not in values else ""
    return (
        f"{name} differs{said} ({sources[0]}'s {entry} is {sources[1]}'s {c:+.3g} × its value before the step, "
        "from the same gradient)."
    )


def _decay_setting(name: str, settings: dict[str, Any]) -> float | None:
    """The setting a decay rate is: the momentum, or one of Adam's betas."""
    if name == "momentum":
        value = settings.get("momentum")
        return float(value) if isinstance(value, (int, float)) else None
    betas = _betas(settings)
    return None if betas is None else betas[0 if name == "β1" else 1]


def _ratio(da: np.ndarray, db: np.ndarray, t: int, sa: dict[str, Any], sb: dict[str, Any], sources: tuple[str, str]) -> str | None:
    """A whole update a constant times the other's: Adam's bias correction, or the learning rate."""
    s = fit(da, db)
    if s is None:
        return None
    src_a, src_b = sources
    betas = _betas(sb) or _betas(sa)
    if betas is not None:
        b1, b2 = betas
        corrections = {
            "the bias correction of both moments": (1 - b1**t) / np.sqrt(1 - b2**t),
            "the first moment's bias correction, 1 - β1^t": 1 - b1**t,
            "the second moment's bias correction, √(1 - β2^t)": 1 / np.sqrt(1 - b2**t),
        }
        for what, c in corrections.items():
            for lacking, factor in ((src_a, c), (src_b, 1 / c)):
                if abs(s - factor) <= FIT * abs(factor):
                    return (
                        f"bias correction missing: {src_a}'s update is {src_b}'s × {s:.3g} at step {t} (β1 {b1:g}, "
                        f"β2 {b2:g}): {lacking}'s Adam lacks {what}."
                    )
    lr_a, lr_b = sa.get("lr"), sb.get("lr")
    if isinstance(lr_a, (int, float)) and isinstance(lr_b, (int, float)) and lr_b and abs(s - lr_a / lr_b) <= FIT * abs(s):
        return f"the learning rate differs: {src_a}'s update is {src_b}'s × {s:.3g} (lr {lr_a:g} against {lr_b:g})."
    return f"{src_a}'s update is {src_b}'s × {s:.3g}: a learning rate, or a scale of the step, differs."


def _decoupled(d: np.ndarray, weights: np.ndarray, sources: tuple[str, str]) -> str | None:
    c = fit(d, weights)
    if c is None:
        return None
    return f"weight decay differs: {sources[0]}'s update is {sources[1]}'s plus {c:.2g}·w (a decay of the weights on one side)."


def buffer(a: Stepped, b: Stepped, x: str, y: str, sources: tuple[str, str]) -> str | None:
    """A sentence on why buffer ``x`` (``y`` in B) differs after the same step on the same inputs."""
    va, vb = a.buffers[x].value.astype(np.float64), b.buffers[y].value.astype(np.float64).reshape(a.buffers[x].value.shape)
    layer = a.buffers[x].layer
    inputs = a.inputs.get(layer)
    before = a.buffers_before.get(x)
    kind = buffer_name(x)
    if inputs is not None and inputs.ndim >= 2 and kind in ("running_mean", "running_var"):
        axes = tuple(i for i in range(inputs.ndim) if i != 1)
        n = int(np.prod([inputs.shape[i] for i in axes]))
        biased = inputs.astype(np.float64).var(axis=axes).reshape(va.shape)
        if kind == "running_var" and n > 1 and (c := fit(va - vb, biased - biased * n / (n - 1))) is not None:
            first, second = sources if c > 0 else sources[::-1]
            return (
                f"running_var: biased vs unbiased variance: {first}'s {layer} updates its running variance with the "
                f"batch variance divided by N ({n}), {second}'s by N - 1, as PyTorch does (momentum {abs(c):.2g})."
            )
        stat = inputs.astype(np.float64).mean(axis=axes).reshape(va.shape) if kind == "running_mean" else biased * n / max(n - 1, 1)
        if before is not None and (c := fit(va - vb, stat - before.value.astype(np.float64).reshape(va.shape))) is not None:
            return f"{kind}: the momentum differs: {sources[0]}'s {layer} moves it {c:+.2g} more toward the batch's statistic per step."
    return describe(va, vb, Sides(f"{sources[0]}'s {x}", f"{sources[1]}'s"), 1e-6)
