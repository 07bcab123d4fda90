"""The patterns a difference between two tensors can have, each with the evidence it needs: what ``diagnose`` tries.

Each hypothesis declares the evidence it needs and says nothing without it. Three kinds recur:

- which axes are spatial: a pixel shift or a padding border needs height and width. A 4-D tensor is taken as
  N C H W and a 5-D one as N C D H W unless ``Sides.spatial`` says otherwise; a 3-D tensor is ambiguous (N C L or
  a sequence N T C) and has none unless ``Sides.spatial`` names them;
- how many entries the tested region holds: a pattern checked on an empty or tiny region proves nothing;
- the share of the total squared difference ``|a - b|²`` that the hypothesis explains (``SHARE``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from fractions import Fraction
from typing import Callable

import numpy as np


FIT = 1e-6  # relative residual under which a hypothesis explains the difference, unless rounding needs more
SHARE = 0.999  # share of the squared difference a hypothesis must explain
EXACT = 1 - 1e-6  # share that holds a pattern whatever the noise floor: its residual is a millionth of the difference
MIN_ENTRIES = 16  # entries a region must hold to be tested at all


@dataclass(frozen=True)
class Sides:
    """How to name the two sides in a sentence, and what is known of the tensor's axes.

    ``spatial``: the axes that are height, width (and depth) of the value as handed to ``describe``; ``()`` for none
    (a sequence, features); None to infer them from the shape: (2, 3) of a 4-D tensor, (2, 3, 4) of a 5-D one, none
    of any other. ``spatial_axes`` turns axis names into them.
    """

    a: str  # how to call side A in a sentence ("mine.py's fc3 grad")
    b: str
    batch: int | None = None
    spatial: tuple[int, ...] | None = None


def spatial_axes(axes: str) -> tuple[int, ...]:
    """The positions of the spatial axes (D, H, W, L) among axes named in the value's order.

    >>> spatial_axes("N C H W"), spatial_axes("N C L"), spatial_axes("N T C")
    ((2, 3), (2,), ())
    """
    return tuple(i for i, name in enumerate(axes.split()) if name in ("D", "H", "W", "L"))


@dataclass
class Case:
    """The two arrays of one culprit and what the hypotheses read from them, each computed once when first read."""

    a: np.ndarray
    b: np.ndarray
    sides: Sides
    fit: float

    @cached_property
    def d(self) -> np.ndarray:
        difference: np.ndarray = self.a - self.b
        return difference

    @cached_property
    def total(self) -> float:
        """|a - b|², the squared difference a hypothesis explains a share of."""
        return float(np.vdot(self.d, self.d))

    @cached_property
    def scale(self) -> float:
        return max(float(np.abs(self.a).max(initial=0.0)), float(np.abs(self.b).max(initial=0.0)), 1e-300)

    @cached_property
    def bad(self) -> np.ndarray:
        """Where the two sides differ beyond the fit, relative to the entry and to the tensor's RMS."""
        rms = float(np.sqrt(np.mean(self.b * self.b))) if self.b.size else 0.0
        found: np.ndarray = np.abs(self.d) > self.fit * (np.abs(self.b) + rms)
        return found

    @cached_property
    def spatial(self) -> tuple[int, ...]:
        if self.sides.spatial is not None:
            return tuple(ax % self.a.ndim for ax in self.sides.spatial if -self.a.ndim <= ax < self.a.ndim)
        return tuple(range(2, self.a.ndim)) if self.a.ndim in (4, 5) else ()

    def share(self, residual: np.ndarray) -> float:
        """The share of the squared difference that a prediction leaving ``residual`` explains."""
        return 1.0 - float(np.vdot(residual, residual)) / self.total if self.total > 0 else 0.0

    def holds(self, residual: np.ndarray) -> bool:
        """An exact pattern holds: its residual is within the noise floor everywhere and it explains SHARE of the
        difference, or its residual is a millionth of the difference (rounding of a lower precision left over)."""
        share = self.share(residual)
        within = bool(np.all(np.abs(residual) <= self.fit * self.scale))
        return share >= EXACT or (within and share >= SHARE)


@dataclass(frozen=True)
class Hypothesis:
    """One pattern: its name, the evidence it needs (in words, for people), and the test that states it.

    ``on`` says which pairs it is tried on: ``"shapes"`` two arrays of different shapes; ``"any"`` the same shape,
    whatever their values; ``"values"`` the same shape, finite, at least 2 entries, not equal.
    """

    name: str
    evidence: str
    test: Callable[[Case], str | None]
    on: str = "values"


def nonfinite(c: Case) -> str | None:
    s = c.sides
    bad_a, bad_b = ~np.isfinite(c.a), ~np.isfinite(c.b)
    if bad_a.any() and not bad_b[bad_a].all():
        return f"{s.a} has {int(bad_a.sum())} NaN/Inf entries where {s.b} is finite."
    if bad_b.any() and not bad_a[bad_b].all():
        return f"{s.b} has {int(bad_b.sum())} NaN/Inf entries where {s.a} is finite."
    return None


def zeros(c: Case) -> str | None:
    if not c.a.any() and c.b.any():
        return f"{c.sides.a} is all zeros: it is never computed (or overwritten with zeros)."
    if not c.b.any() and c.a.any():
        return f"{c.sides.b} is all zeros: it is never computed (or overwritten with zeros)."
    return None


def _name_factor(c: float, batch: int | None) -> tuple[str, str]:
    """The factor as a number to read, and what it says about the cause when it is a telling one ("" if not)."""
    for n in sorted({2, 3, 4, *([batch] if batch and batch > 1 else [])}, reverse=True):
        for value, text in ((n, f"{n}"), (1 / n, f"1/{n}")):
            if abs(c - value) <= 1e-6 * abs(value):
                return f"{text}" + (f" (the batch size is {batch}: a 1/N missing or applied twice)" if n == batch else ""), ""
    if batch and batch > 2:
        # A variance divided by N - 1 (unbiased) where N was meant scales a normalized value by sqrt((N-1)/N). The
        # epsilon inside the square root moves the factor off it a little, hence the looser match.
        for ratio, text in (((batch - 1) / batch, f"{batch - 1}/{batch}"), (batch / (batch - 1), f"{batch}/{batch - 1}")):
            if abs(c - np.sqrt(ratio)) <= 1e-4 * c:
                return f"{c:.6g}", (
                    f"√({text}) with a batch of {batch}, a variance divided by N - 1 (unbiased) where N was meant, "
                    "or N where N - 1 was"
                )
    frac = Fraction(c).limit_denominator(16)
    if abs(float(frac) - c) <= 1e-9 * abs(c) and frac.denominator > 1:
        return f"{frac.numerator}/{frac.denominator}", ""
    # Enough digits that a factor near 1 does not print as 1.
    digits = max(6, int(np.ceil(-np.log10(abs(c - 1)))) + 3) if c != 1 else 6
    return f"{c:.{digits}g}", ""


def factor(c: Case) -> str | None:
    bb = float(np.vdot(c.b, c.b))
    if bb == 0 or np.count_nonzero(c.b) < 2:
        return None
    k = float(np.vdot(c.a, c.b)) / bb
    if k == 0 or not c.holds(c.a - k * c.b):
        return None
    if abs(k + 1) <= 1e-6:
        return f"{c.sides.a} is {c.sides.b} with its sign flipped."
    text, cause = _name_factor(k, c.sides.batch)
    return f"{c.sides.a} is {text} × {c.sides.b}" + (f": {cause}." if cause else ".")


def permuted(c: Case) -> str | None:
    """Shapes differ: a is b with its axes permuted (compared whole, residual within the fit and SHARE of b)."""
    a, b, s = c.a, c.b, c.sides
    if a.ndim != b.ndim or a.ndim > 5 or sorted(a.shape) != sorted(b.shape) or a.size < 2:
        return None
    for axes in itertools.permutations(range(a.ndim)):
        if axes == tuple(range(a.ndim)) or a.transpose(axes).shape != b.shape:
            continue
        r = a.transpose(axes) - b
        if np.all(np.abs(r) <= c.fit * c.scale) and float(np.vdot(r, r)) <= (1 - SHARE) * float(np.vdot(b, b)):
            return f"{s.a} is {s.b} with its axes permuted: {s.a} transposed by {axes} equals {s.b}."
    return None


def transposed(c: Case) -> str | None:
    a = c.a
    if a.ndim < 2:
        return None
    if a.shape[-1] == a.shape[-2] and c.holds(np.swapaxes(a, -1, -2) - c.b):
        return f"{c.sides.a} is {c.sides.b} transposed (its last two axes swapped)."
    if len(set(a.shape)) == a.ndim or a.ndim > 5:
        return None
    for axes in itertools.permutations(range(a.ndim)):
        if axes != tuple(range(a.ndim)) and a.transpose(axes).shape == a.shape and c.holds(a.transpose(axes) - c.b):
            return f"{c.sides.a} is {c.sides.b} with its axes permuted: {c.sides.a} transposed by {axes} equals {c.sides.b}."
    return None


def _channel_label(c: Case, axis: int) -> str | None:
    """What to call the entries along ``axis`` when a bias is added per entry; None when that is no bias (a spatial
    axis, or axis 1 of a 3-D tensor that may be a sequence's positions)."""
    if axis in c.spatial:
        return None
    if axis == c.a.ndim - 1 and not c.spatial:
        return "feature" if c.a.ndim == 2 else "feature (last axis)"
    if axis == 1 and c.spatial:
        return "channel (axis 1)"
    return None


def shift(c: Case) -> str | None:
    d = c.d
    if c.holds(d - d.mean()):
        return f"{c.sides.a} is {c.sides.b} shifted by a constant {d.mean():.6g}."
    if c.a.ndim < 2:
        return None
    for axis in sorted({1, c.a.ndim - 1}):
        label = _channel_label(c, axis)
        others = tuple(i for i in range(c.a.ndim) if i != axis)
        # Each constant is estimated from the entries sharing it: at least 2 of them, and 2 per constant in all.
        if label is None or c.a.size < 2 * c.a.shape[axis] or c.a.shape[axis] < 2:
            continue
        per = d.mean(axis=others, keepdims=True)
        if np.ptp(per) > c.fit * c.scale and c.holds(d - per):
            return f"{c.sides.a} is {c.sides.b} shifted by a different constant per {label}: a bias differs."
    return None


def _normalized_axes(x: np.ndarray) -> tuple[set[int], set[int]]:
    """Axes over which x sums to one (a softmax) and over which it has mean 0 and variance 1 (a normalization).

    A slice of 2 or 3 entries normalized has little freedom left (two entries become ±1), so a normalization is
    only recognised along an axis of 4 or more.
    """
    sums, norms = set(), set()
    for axis in range(x.ndim):
        if x.shape[axis] < 2 or x.size // x.shape[axis] < 2:
            continue
        if np.all(x >= 0) and np.allclose(x.sum(axis=axis), 1.0, atol=1e-5):
            sums.add(axis)
        if x.shape[axis] >= 4 and np.allclose(x.mean(axis=axis), 0.0, atol=1e-4) and np.allclose(x.var(axis=axis), 1.0, atol=1e-2):
            norms.add(axis)
    return sums, norms


def wrong_axis(c: Case) -> str | None:
    if c.a.ndim < 2:
        return None
    sums_a, norms_a = _normalized_axes(c.a)
    sums_b, norms_b = _normalized_axes(c.b)
    if sums_a and sums_b and not sums_a & sums_b:
        return f"a softmax over axis {min(sums_a)} in {c.sides.a} but over axis {min(sums_b)} in {c.sides.b}."
    if norms_a and norms_b and not norms_a & norms_b:
        return f"a normalization over axis {min(norms_a)} in {c.sides.a} but over axis {min(norms_b)} in {c.sides.b}."
    return None


def at_zeros(c: Case) -> str | None:
    bad = c.bad
    agree = ~bad & ((c.a != 0) | (c.b != 0))
    # The claim is "differs only at exact zeros, agrees elsewhere": both regions must hold something to test, and
    # agreeing where both sides are zero tests nothing.
    if bad.sum() < 2 or agree.sum() < MIN_ENTRIES:
        return None
    if c.share(np.where(bad, 0.0, c.d)) < SHARE:
        return None
    s = c.sides
    if np.all(c.b[bad] == 0):
        return f"{s.a} differs only where {s.b} is exactly zero: it lets through what should be blocked (a ReLU or max-pool derivative, a mask)."
    if np.all(c.a[bad] == 0):
        return f"{s.a} is exactly zero where {s.b} is not, and agrees elsewhere (a ReLU or max-pool derivative, a mask)."
    if np.all((c.a[bad] == 0) | (c.b[bad] == 0)):
        return (
            f"{s.a} and {s.b} differ only where one of them is exactly zero: the gradient is routed to "
            "different positions (a max-pool or ReLU derivative)."
        )
    return None


def _scale_about_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit a - b = u_g (b - c_j) with one scale per row g and one centre per column j (a layer norm's shift), by
    alternating least squares; returns (u, c, residual)."""
    d = a - b
    centre = b.mean(axis=0)
    for _ in range(50):
        x = b - centre
        u = (d * x).sum(axis=1) / np.maximum((x * x).sum(axis=1), 1e-300)
        centre = (u[:, None] * (u[:, None] * b - d)).sum(axis=0) / max(float((u * u).sum()), 1e-300)
    return u, centre, d - u[:, None] * (b - centre)


def _scale_about_own_centre(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit a - b = u_g (b - c_g) per row g (a batch norm's channel and its shift): a straight line per row."""
    d = a - b
    bm, dm = b.mean(axis=1, keepdims=True), d.mean(axis=1, keepdims=True)
    u = ((d - dm) * (b - bm)).sum(axis=1) / np.maximum(((b - bm) ** 2).sum(axis=1), 1e-300)
    w = dm[:, 0] - u * bm[:, 0]
    centre = -w / np.where(u == 0, 1.0, u)
    return u, centre, d - (u[:, None] * b + w[:, None])


def epsilon(c: Case) -> str | None:
    """A normalization divides by sqrt(var + eps): another eps scales each group's normalized values by its own
    factor near 1, about the layer's shift. Groups are rows over the last axis (a layer norm, its shift per
    feature) or channels (axis 1, a batch norm, its shift per channel). Every entry is fitted, zeros included."""
    a, b = c.a, c.b
    if a.ndim < 2 or np.any((a == 0) != (b == 0)):
        return None  # a normalization has no exact zeros; a ReLU or max-pool pattern is another hypothesis
    forms = (
        ("row", "feature", a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), _scale_about_rows),
        ("channel", "channel", np.moveaxis(a, 1, 0).reshape(a.shape[1], -1), np.moveaxis(b, 1, 0).reshape(b.shape[1], -1), _scale_about_own_centre),
    )
    for group, centred, ga, gb, fit in forms:
        n_groups, per_group = ga.shape
        n_centres = per_group if group == "row" else n_groups
        if n_groups < 2 or per_group < 4 or ga.size < 4 * (n_groups + n_centres):
            continue
        u, centre, residual = fit(ga, gb)
        if c.share(residual) < SHARE or not np.all(np.isfinite(u)):
            continue
        # One sign (the larger eps shrinks every group), 10% at most, and not one common factor.
        if not (np.all(u < 0) or np.all(u > 0)) or np.abs(u).max() > 0.1 or np.ptp(u) < 0.1 * np.abs(u).max():
            continue
        # The centre is the layer's shift: inside the values it shifts (a bias change would need one far outside).
        lo, hi = (gb.min(axis=0), gb.max(axis=0)) if group == "row" else (gb.min(axis=1), gb.max(axis=1))
        if np.any(centre < lo) or np.any(centre > hi):
            continue
        s = 1 + u
        return (
            f"{c.sides.a} is {c.sides.b} with each {group}'s normalized values (about the per-{centred} shift) scaled "
            f"by a factor of its own, {s.min():.8f} to {s.max():.8f}: an epsilon in a normalization differs."
        )
    return None
