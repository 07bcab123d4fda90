"""The patterns that need a square of positions (a causal mask) or spatial axes (a padding border, a window moved by
a pixel), each with the evidence it needs (``patterns`` says which).
"""

from __future__ import annotations

import itertools

import numpy as np

from layerdiff.patterns import MIN_ENTRIES, SHARE, Case


def triangle(c: Case) -> str | None:
    """A mask bug moves the same entries of every (query, key) plane, a whole diagonal band at least; differences
    that merely happen to fall in one triangle do not fill one."""
    a = c.a
    n = a.shape[-1] if a.ndim >= 2 else 0
    if a.ndim < 2 or a.shape[-2] != n or n < 4:
        return None  # below 4 x 4 a triangle holds too few entries to tell from chance
    bad: np.ndarray = np.asarray(c.bad.reshape(-1, n, n).any(axis=0))
    upper, diagonal = np.triu(np.ones((n, n), dtype=bool), 1), np.eye(n, dtype=bool)
    full_band = any(np.diagonal(bad, k).all() for k in range(1, n // 2 + 1))  # a band of n/2 entries at least
    s = c.sides
    if full_band and not bad[~upper].any():
        return f"{s.a} differs from {s.b} only above the diagonal: a causal mask lets future positions through."
    if bad[diagonal].all() and not bad[~diagonal].any():
        return f"{s.a} differs from {s.b} only on the diagonal: a causal mask off by one."
    if bad[diagonal].all() and not bad[~(upper | diagonal)].any():
        return f"{s.a} differs from {s.b} only on and above the diagonal: a causal mask off by one."
    return None


def _band(shape: tuple[int, ...], axes: tuple[int, ...], width: int) -> np.ndarray:
    """True within ``width`` of either end of any of ``axes``."""
    band = np.zeros(shape, dtype=bool)
    for ax in axes:
        index = np.arange(shape[ax])
        edge = (index < width) | (index >= shape[ax] - width)
        band |= edge.reshape([-1 if i == ax else 1 for i in range(len(shape))])
    return band


def border(c: Case) -> str | None:
    axes = c.spatial
    if not axes:
        return None
    bad = c.bad
    if not bad.any():
        return None
    for width in (1, 2):
        band = _band(c.a.shape, axes, width)
        inner = int((~band).sum())
        # The clean interior is the evidence: as large as the band, and MIN_ENTRIES in all.
        if 2 * inner < c.a.size or inner < MIN_ENTRIES:
            break
        if not bad[~band].any() and c.share(np.where(band, 0.0, c.d)) >= SHARE:
            return f"{c.sides.a} differs from {c.sides.b} only within {width} pixel(s) of the border: padding."
    return None


def _moved(x: np.ndarray, axes: tuple[int, ...], offsets: tuple[int, ...], source: bool) -> tuple[slice, ...]:
    """The part of x that a shift by ``offsets`` along ``axes`` maps (source) or lands on (not source)."""
    index = [slice(None)] * x.ndim
    for ax, k in zip(axes, offsets):
        n = x.shape[ax]
        index[ax] = slice(max(-k, 0), n + min(-k, 0)) if source else slice(max(k, 0), n + min(k, 0))
    return tuple(index)


def spatial_shift(c: Case) -> str | None:
    axes = c.spatial[-2:]
    if not axes or min(c.a.shape[ax] for ax in axes) < 4:
        return None  # a map of 2 or 3 pixels moved by one is mostly its edge
    plane = int(np.prod([c.a.shape[ax] for ax in axes]))
    shifts = sorted(
        (o for o in itertools.product(range(-2, 3), repeat=len(axes)) if any(o)),
        key=lambda o: (max(map(abs, o)), sum(map(abs, o)), [-k for k in o]),
    )
    for offsets in shifts:
        into, src = _moved(c.a, axes, offsets, False), _moved(c.b, axes, offsets, True)
        overlap = int(np.prod([c.a.shape[ax] - abs(k) for ax, k in zip(axes, offsets)]))
        # The region compared: half of each image at least, MIN_ENTRIES in all.
        if overlap * 2 < plane or overlap * (c.a.size // plane) < MIN_ENTRIES:
            continue
        residual = c.a[into] - c.b[src]
        d_in = c.d[into]
        explained = float(np.vdot(d_in, d_in)) - float(np.vdot(residual, residual))
        # Inside the overlap the shift accounts for the difference; the strip it uncovers is left unexplained, but
        # the overlap must hold at least half of the whole difference.
        if np.all(np.abs(residual) <= c.fit * c.scale) and explained >= 0.5 * c.total:
            shown = offsets if len(offsets) > 1 else offsets[0]
            return (
                f"{c.sides.a} is {c.sides.b} moved by {shown} pixels: a window, padding or stride off by "
                f"{max(map(abs, offsets))}."
            )
    return None
