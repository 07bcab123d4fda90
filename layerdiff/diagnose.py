"""What a difference looks like: hypotheses tested on the two arrays, each stated only when it fits; and where in
the tensor the two differ.

``describe(a, b)`` compares a culprit's value on side A with side B's value computed from the same inputs, and
returns one sentence in the user's terms, or None when no simple pattern explains the difference. ``error_map``
gives the maps of the relative error that the HTML report draws.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from layerdiff.metrics import finite_pair, relative

FIT = 1e-6  # relative residual under which a hypothesis explains the difference, unless rounding needs more


@dataclass(frozen=True)
class Sides:
    a: str  # how to call side A in a sentence ("mine.py's fc3 grad")
    b: str
    batch: int | None = None


def describe(a: np.ndarray, b: np.ndarray, sides: Sides, tol: float) -> str | None:
    """The first hypothesis that fits, as a sentence.

    >>> describe(np.array([[1.0, 2.0], [3.0, 4.0]]) * 2, np.array([[1.0, 2.0], [3.0, 4.0]]), Sides("A", "B"), 1e-12)
    'A is 2 × B.'
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape == b.shape and (found := _nonfinite(a, b, sides, tol)):
        return found
    if a.size < 2:
        return None  # one number (a loss) has no other pattern to show
    if a.shape != b.shape:
        return _permuted(a, b, sides, max(FIT, tol))
    for hypothesis in HYPOTHESES:
        sentence = hypothesis(a, b, sides, max(FIT, tol))
        if sentence:
            return sentence
    return None


def _close(x: np.ndarray, y: np.ndarray, fit: float) -> bool:
    scale = max(float(np.abs(y).max(initial=0.0)), float(np.abs(x).max(initial=0.0)), 1e-300)
    return bool(np.all(np.abs(x - y) <= fit * scale))


def _nonfinite(a: np.ndarray, b: np.ndarray, s: Sides, tol: float) -> str | None:
    bad_a, bad_b = ~np.isfinite(a), ~np.isfinite(b)
    if bad_a.any() and not bad_b[bad_a].all():
        return f"{s.a} has {int(bad_a.sum())} NaN/Inf entries where {s.b} is finite."
    if bad_b.any() and not bad_a[bad_b].all():
        return f"{s.b} has {int(bad_b.sum())} NaN/Inf entries where {s.a} is finite."
    return None


def _zeros(a: np.ndarray, b: np.ndarray, s: Sides, tol: float) -> str | None:
    if not a.any() and b.any():
        return f"{s.a} is all zeros: it is never computed (or overwritten with zeros)."
    if not b.any() and a.any():
        return f"{s.b} is all zeros: it is never computed (or overwritten with zeros)."
    return None


def _name_factor(c: float, batch: int | None) -> str:
    for n in sorted({2, 3, 4, *([batch] if batch and batch > 1 else [])}, reverse=True):
        for value, text in ((n, f"{n}"), (1 / n, f"1/{n}")):
            if abs(c - value) <= 1e-6 * abs(value):
                return f"{text}" + (f" (the batch size is {batch}: a 1/N missing or applied twice)" if n == batch else "")
    frac = Fraction(c).limit_denominator(16)
    if abs(float(frac) - c) <= 1e-9 * abs(c) and frac.denominator > 1:
        return f"{frac.numerator}/{frac.denominator}"
    return f"{c:.6g}"


def _factor(a: np.ndarray, b: np.ndarray, s: Sides, tol: float) -> str | None:
    bb = float(np.vdot(b, b))
    if bb == 0:
        return None
    c = float(np.vdot(a, b)) / bb
    if c == 0 or not _close(a, c * b, tol):
        return None
    if abs(c + 1) <= 1e-6:
        return f"{s.a} is {s.b} with its sign flipped."
    return f"{s.a} is {_name_factor(c, s.batch)} × {s.b}."


def _permuted(a: np.ndarray, b: np.ndarray, s: Sides, fit: float) -> str | None:
    if a.ndim != b.ndim or a.ndim > 5 or sorted(a.shape) != sorted(b.shape):
        return None
    for axes in itertools.permutations(range(a.ndim)):
        if axes != tuple(range(a.ndim)) and a.transpose(axes).shape == b.shape and _close(a.transpose(axes), b, fit):
            return f"{s.a} is {s.b} with its axes permuted: {s.a} transposed by {axes} equals {s.b}."
    return None


def _transposed(a: np.ndarray, b: np.ndarray, s: Sides, tol: float) -> str | None:
    if a.ndim >= 2 and a.shape[-1] == a.shape[-2] and _close(np.swapaxes(a, -1, -2), b, tol):
        return f"{s.a} is {s.b} transposed (its last two axes swapped)."
    return _permuted(a, b, s, tol) if a.ndim >= 2 and len(set(a.shape)) < a.ndim else None


def _shift(a: np.ndarray, b: np.ndarray, s: Sides, tol: float) -> str | None:
    d = a - b
    scale = max(float(np.abs(b).max(initial=0.0)), 1e-300)
    if np.all(np.abs(d - d.mean()) <= tol * scale):
        return f"{s.a} is {s.b} shifted by a constant {d.mean():.6g}."
    if a.ndim >= 2:
        axes = ((1, "feature"),) if a.ndim == 2 else ((1, "channel (axis 1)"), (a.ndim - 1, "feature (last axis)"))
        for axis, label in axes:
            others = tuple(i for i in range(a.ndim) if i != axis)
            per = d.mean(axis=others, keepdims=True)
            if np.all(np.abs(d - per) <= tol * scale) and np.ptp(per) > tol * scale:
                return f"{s.a} is {s.b} shifted by a different constant per {label}: a bias differs."
    return None


def _spatial_shift(a: np.ndarray, b: np.ndarray, s: Sides, tol: float) -> str | None:
    if a.ndim < 3 or min(a.shape[-2:]) < 4:
        return None
    for dy, dx in ((1, 1), (-1, -1), (1, 0), (0, 1), (-1, 0), (0, -1), (2, 2), (-2, -2)):
        ya = slice(max(dy, 0), a.shape[-2] + min(dy, 0))
        yb = slice(max(-dy, 0), a.shape[-2] + min(-dy, 0))
        xa = slice(max(dx, 0), a.shape[-1] + min(dx, 0))
        xb = slice(max(-dx, 0), a.shape[-1] + min(-dx, 0))
        inner_a, inner_b = a[..., ya, xa], b[..., yb, xb]
        if _close(inner_a[..., 1:-1, 1:-1], inner_b[..., 1:-1, 1:-1], tol):
            return (
                f"{s.a} is {s.b} moved by ({dy}, {dx}) pixels: a window, padding or stride off by "
                f"{max(abs(dy), abs(dx))}."
            )
    return None


def _where(a: np.ndarray, b: np.ndarray, tol: float) -> np.ndarray:
    scale = float(np.sqrt(np.mean(b * b))) if b.size else 0.0
    bad: np.ndarray = np.abs(a - b) > tol * (np.abs(b) + scale)
    return bad


def _at_zeros(a: np.ndarray, b: np.ndarray, s: Sides, tol: float) -> str | None:
    bad = _where(a, b, tol)
    if not bad.any():
        return None
    if np.all(b[bad] == 0):
        return (
            f"{s.a} differs only where {s.b} is exactly zero: it lets through what should be blocked "
            "(a ReLU or max-pool derivative, a mask)."
        )
    if np.all(a[bad] == 0):
        return f"{s.a} is exactly zero where {s.b} is not, and agrees elsewhere (a ReLU or max-pool derivative, a mask)."
    if np.all((a[bad] == 0) | (b[bad] == 0)):
        return (
            f"{s.a} and {s.b} differ only where one of them is exactly zero: the gradient is routed to "
            "different positions (a max-pool or ReLU derivative)."
        )
    return None


def _border(a: np.ndarray, b: np.ndarray, s: Sides, tol: float) -> str | None:
    if a.ndim < 3 or min(a.shape[-2:]) < 5:
        return None
    bad = _where(a, b, tol)
    for width in (1, 2):
        inner = bad[..., width:-width, width:-width]
        if bad.any() and not inner.any():
            return f"{s.a} differs from {s.b} only within {width} pixel(s) of the border: padding."
    return None


def _triangle(a: np.ndarray, b: np.ndarray, s: Sides, tol: float) -> str | None:
    if a.ndim < 2 or a.shape[-1] != a.shape[-2] or a.shape[-1] < 2:
        return None
    bad: np.ndarray = np.asarray(_where(a, b, tol).reshape(-1, a.shape[-2], a.shape[-1]).any(axis=0))
    if not bad.any():
        return None
    upper, diagonal = np.triu(np.ones_like(bad), 1), np.eye(bad.shape[0], dtype=bool)
    if not bad[~upper.astype(bool)].any():
        return f"{s.a} differs from {s.b} only above the diagonal: a causal mask lets future positions through."
    if not bad[~diagonal].any():
        return f"{s.a} differs from {s.b} only on the diagonal: a causal mask off by one."
    if not bad[~(upper.astype(bool) | diagonal)].any():
        return f"{s.a} differs from {s.b} only on and above the diagonal: a causal mask off by one."
    return None


def _normalized_axes(x: np.ndarray) -> tuple[set[int], set[int]]:
    """Axes over which x sums to one (a softmax) and over which it has mean 0 and variance 1 (a normalization)."""
    sums, norms = set(), set()
    for axis in range(x.ndim):
        if x.shape[axis] < 2:
            continue
        if np.all(x >= 0) and np.allclose(x.sum(axis=axis), 1.0, atol=1e-5):
            sums.add(axis)
        if np.allclose(x.mean(axis=axis), 0.0, atol=1e-4) and np.allclose(x.var(axis=axis), 1.0, atol=1e-2):
            norms.add(axis)
    return sums, norms


def _wrong_axis(a: np.ndarray, b: np.ndarray, s: Sides, tol: float) -> str | None:
    if a.ndim < 2:
        return None
    sums_a, norms_a = _normalized_axes(a)
    sums_b, norms_b = _normalized_axes(b)
    if sums_a and sums_b and not sums_a & sums_b:
        return f"a softmax over axis {min(sums_a)} in {s.a} but over axis {min(sums_b)} in {s.b}."
    if norms_a and norms_b and not norms_a & norms_b:
        return f"a normalization over axis {min(norms_a)} in {s.a} but over axis {min(norms_b)} in {s.b}."
    return None


def _epsilon(a: np.ndarray, b: np.ndarray, s: Sides, tol: float) -> str | None:
    if a.ndim < 2:
        return None
    rows_a, rows_b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    usable = np.all(np.abs(rows_b) > 1e-12, axis=1)
    if usable.sum() < 2:
        return None
    ratio = rows_a[usable] / rows_b[usable]
    per_row = ratio.mean(axis=1, keepdims=True)
    if np.all(np.abs(ratio - per_row) <= tol * np.abs(per_row)) and np.all(np.abs(per_row - 1) < 1e-2) and np.ptp(per_row) > 0:
        return (
            f"{s.a} is {s.b} scaled by a factor per row between {per_row.min():.8f} and {per_row.max():.8f}: "
            "an epsilon in a normalization differs."
        )
    return None


HYPOTHESES: list[Callable[[np.ndarray, np.ndarray, Sides, float], str | None]] = [
    _nonfinite,
    _zeros,
    _factor,
    _transposed,
    _shift,
    _wrong_axis,
    _epsilon,
    _triangle,
    _at_zeros,
    _border,
    _spatial_shift,
]


MAX_MAPS = 16  # channel maps an error map keeps, the worst first


def error_map(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Where in the tensor ``a`` and ``b`` differ, as 2-D maps of the relative error (what ``max_rel`` is the max of).

    The leading (batch) axis of a 3-D or 4-D tensor is reduced by its maximum; a 4-D tensor is read as
    ``(N, C, H, W)`` and gives one map per channel, the ``MAX_MAPS`` worst; a 1-D one a single row. An element
    finite on one side only counts as ``inf``.

    Returns:
        ``maps`` of shape ``(k, rows, columns)`` and a label per map (empty for a tensor drawn whole).

    >>> maps, labels = error_map(np.ones((2, 3, 4, 4)), np.ones((2, 3, 4, 4)))
    >>> maps.shape, labels[0]
    ((3, 4, 4), 'channel 0')
    """
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64).reshape(np.shape(a))
    both, same_special = finite_pair(a64, b64)
    rel = np.where(both | same_special, relative(np.abs(np.where(both, a64 - b64, 0.0)), np.where(both, b64, 0.0)), np.inf)
    if rel.ndim <= 2:
        return rel.reshape(1, -1, rel.shape[-1] if rel.ndim else 1), [""]
    if rel.ndim == 3:
        return rel.max(axis=0)[None], [""]
    channels = rel.reshape(*rel.shape[:3], -1).max(axis=0)
    order = np.argsort(-channels.reshape(len(channels), -1).max(axis=1), kind="stable")[:MAX_MAPS]
    order.sort()
    return channels[order], [f"channel {c}" for c in order]
