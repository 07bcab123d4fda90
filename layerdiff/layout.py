"""Axis names of tensors, and the transposes between two namings.

A layout names a tensor's axes: ``"in out"`` for NumPy's ``x @ W``, ``"out in"`` for PyTorch's Linear, ``"O I H W"``
and ``"H W I O"`` for convolutions, ``"N H W C"`` for channels-last activations. Moving a tensor between two
layouts is a transpose worked out from the names, so a square weight is transposed when its layouts say so, not
when its shape happens to. PyTorch's order is the canonical one: what reads recordings never sees another.
"""

from __future__ import annotations

import numpy as np

# PyTorch's order. Recordings hand out every tensor in it; dumps of any framework hash their weights in it.
CANONICAL_AXES = ("out", "in", "O", "I", "N", "C", "D", "H", "W")


def axes_of(layout: str) -> list[str]:
    """The axis names of a layout. A trailing ``?`` marks a layout an adapter guessed, which shapes may overrule.

    >>> axes_of("in out?")
    ['in', 'out']
    """
    return layout.replace("?", "").split()


def is_guess(layout: str) -> bool:
    return layout.endswith("?")


def _to_canonical(layout: str, ndim: int) -> tuple[int, ...] | None:
    """The transpose from ``layout`` to PyTorch's order; None when there is none, or the layout does not fit ``ndim``."""
    axes = axes_of(layout)
    if len(axes) != ndim:
        return None
    rank = {a: CANONICAL_AXES.index(a) if a in CANONICAL_AXES else len(CANONICAL_AXES) + i for i, a in enumerate(axes)}
    order = tuple(sorted(range(ndim), key=lambda i: rank[axes[i]]))
    return None if order == tuple(range(ndim)) else order


def canonical(value: np.ndarray, layout: str) -> np.ndarray:
    """``value``, whose axes ``layout`` names, in PyTorch's order (as it is when the layout does not fit).

    >>> canonical(np.zeros((4, 8, 8, 3)), "N H W C").shape
    (4, 3, 8, 8)
    """
    order = _to_canonical(layout, value.ndim)
    return value if order is None else value.transpose(order)


def from_canonical(value: np.ndarray, layout: str) -> np.ndarray:
    """The inverse of ``canonical``: a tensor in PyTorch's order, laid out as ``layout`` says."""
    order = _to_canonical(layout, value.ndim)
    return value if order is None else value.transpose(np.argsort(order))


def canonical_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    order = _to_canonical(layout, len(shape))
    return tuple(shape) if order is None else tuple(shape[i] for i in order)


def transpose_between(src_layout: str, dst_layout: str) -> tuple[int, ...] | None:
    """Axes that take a tensor from ``src_layout`` to ``dst_layout``; None when no transpose is needed.

    >>> transpose_between("in out", "out in")
    (1, 0)
    >>> transpose_between("O I H W", "H W I O")
    (2, 3, 1, 0)
    >>> transpose_between("out", "out") is None
    True
    """
    src, dst = axes_of(src_layout), axes_of(dst_layout)
    if not src or not dst or src == dst or sorted(src) != sorted(dst):
        return None
    return tuple(src.index(axis) for axis in dst)


def squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape without its axes of length 1: nnfs keeps a bias as (1, out) where frameworks hold (out,)."""
    return tuple(d for d in shape if d != 1)
