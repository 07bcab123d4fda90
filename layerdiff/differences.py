"""One coordinate's central difference, as the gradient check takes it: ``(L(θ+h) - L(θ-h)) / 2h`` first at
h = 1e-5, at every step of ``STEPS`` when that does not agree or a kink was crossed, the estimate taken where
neighbouring steps agree best, their disagreement its own uncertainty (``gradcheck`` says why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from layerdiff.isolate import Sample, received
from layerdiff.records import Trace
from layerdiff.results import Status

# Relative error bands (cs231n, "Gradient checks": above 1e-2 probably wrong, below 1e-4 fine near kinks, 1e-7 and
# below for smooth functions; with the step chosen per coordinate, float64 does better than their single h).
GOOD = 1e-6
ACCEPTABLE = 1e-4
STEPS = (1e-5, 1e-3, 1e-4, 1e-6, 1e-7)  # relative to max(1, |θ|)
BEND = 0.05  # second difference over first difference that means a kink was crossed
ROUNDING = 16 * np.finfo(np.float64).eps  # relative rounding error allowed in one loss evaluation


@dataclass
class Estimate:
    numeric: float
    step: float
    spread: float  # the estimate's own uncertainty
    kink_at: str  # the layer that bent at every step tried; "" when smooth


def estimate(
    value: np.ndarray, run: Callable[[np.ndarray, dict[str, list[np.ndarray]]], Trace], seen_by: int | None, i: int, f0: float, base: Trace,
    needs_more: Callable[[Estimate], bool],
) -> Estimate | None:
    """The derivative of the loss in coordinate ``i`` of ``value``, which ``run`` moves (``seen_by``: the layer that
    must receive it moved); None when it never reached that layer. More steps are tried when the first bends or
    ``needs_more`` of its estimate."""
    scale = max(1.0, abs(float(value.flat[i])))
    tried: dict[float, tuple[float, float, str]] = {}

    def central(step: float) -> tuple[float, float, str] | None:
        h = step * scale
        plus, minus = value.copy(), value.copy()
        plus.flat[i] += h
        minus.flat[i] -= h
        tp, tm = run(plus, {}), run(minus, {})
        if seen_by is not None and received(tp, seen_by, Sample.at_index(plus, i), len(tp.layers)) is not True:
            return None
        fp, fm = float(tp.loss or 0.0), float(tm.loss or 0.0)
        rounding = ROUNDING * max(abs(fp), abs(fm), abs(f0)) / h
        return (fp - fm) / (2 * h), rounding, bend(base, tp, tm)

    first = central(STEPS[0])
    if first is None:
        return None
    tried[STEPS[0]] = first
    n, rounding, bent = first
    if not bent and not needs_more(Estimate(n, STEPS[0] * scale, rounding, "")):
        return Estimate(n, STEPS[0] * scale, rounding, "")
    for step in STEPS[1:]:
        result = central(step)
        if result is not None:
            tried[step] = result
    smooth = sorted((s for s, r in tried.items() if not r[2]), reverse=True)
    if not smooth:
        return Estimate(n, STEPS[0] * scale, rounding, bent)
    if len(smooth) == 1:
        s = smooth[0]
        return Estimate(tried[s][0], s * scale, tried[s][1], "")
    # Where neighbouring steps agree best, truncation (large h) and rounding (small h) errors are both small.
    spread, s = min((abs(tried[a][0] - tried[b][0]), b) for a, b in zip(smooth, smooth[1:]))
    return Estimate(tried[s][0], s * scale, max(spread, tried[s][1]), "")


def bend(base: Trace, plus: Trace, minus: Trace) -> str:
    """The first layer whose output is not smooth between the two moved runs (a mask flipped), or ""."""
    for r0, rp, rm in zip(base.layers, plus.layers, minus.layers):
        for key, o0 in r0.tensors.items():
            if not key.startswith("output") or o0.size < 2 or key not in rp.tensors or key not in rm.tensors:
                continue
            op, om = rp.tensors[key], rm.tensors[key]
            if op.shape != o0.shape or om.shape != o0.shape:
                continue
            first = np.abs(op - om)
            top = first.max(initial=0.0)
            if not top > 0:
                continue
            second = np.abs(op + om - 2 * o0)
            # Rounding on the tensor's own scale: a value near zero is often computed from much larger ones.
            noise = 64 * np.finfo(np.float64).eps * max(np.abs(o0).max(), np.abs(op).max(), np.abs(om).max())
            bent = (second > BEND * first) & (second > noise) & (first > noise) & (first >= 1e-3 * top)
            if bent.any():
                return r0.name
    return ""


def judge_point(a: float, est: Estimate) -> tuple[float, float, Status]:
    """The relative error, the part of it beyond the estimate's uncertainty, and the status that part earns."""
    n = est.numeric
    scale = max(abs(a), abs(n))
    if not np.isfinite(a) or not np.isfinite(n):
        return float("inf"), float("inf"), "kink" if est.kink_at else "wrong"
    rel = 0.0 if scale == 0 else abs(a - n) / scale
    excess = 0.0 if scale == 0 else max(abs(a - n) - est.spread, 0.0) / scale
    if est.kink_at:
        return rel, excess, "kink"
    return rel, excess, "good" if excess <= GOOD else "acceptable" if excess <= ACCEPTABLE else "wrong"
