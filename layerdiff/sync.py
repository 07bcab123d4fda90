"""Identical weights on both sides: which parameter of one side feeds which of the other, and in what layout.

A layout names a tensor's axes: ``"in out"`` for NumPy's ``x @ W``, ``"out in"`` for PyTorch's Linear,
``"O I H W"`` and ``"H W I O"`` for convolutions, ``"N H W C"`` for channels-last activations. Moving a tensor
between two layouts is a transpose worked out from the names, so a square weight is transposed when its layouts
say so, not when its shape happens to. Tensors of different layouts are compared in the canonical one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from layerdiff.errors import AlignmentError
from layerdiff.records import ParamRecord

# PyTorch's order: dumps of any framework hash their weights in it, and tensors of two layouts are compared in it.
CANONICAL_AXES = ("out", "in", "O", "I", "N", "C", "D", "H", "W")


@dataclass(frozen=True)
class WeightLink:
    """One parameter of the source side copied into one of the destination side."""

    src: str
    dst: str
    src_shape: tuple[int, ...]
    dst_shape: tuple[int, ...]
    axes: tuple[int, ...] | None  # transpose applied to the source value; None when copied as it is
    how: str  # "name", "order" or "map"

    def apply(self, value: np.ndarray) -> np.ndarray:
        """The source's value (or gradient) as the destination holds it."""
        moved = value if self.axes is None else value.transpose(self.axes)
        return np.ascontiguousarray(moved.reshape(self.dst_shape))

    def describe(self) -> str:
        moved = "" if self.axes is None else ("transposed" if len(self.axes) == 2 else f"axes {self.axes}")
        if not moved and self.src_shape != self.dst_shape:
            moved = "reshaped"
        return f"{self.src} {self.src_shape} -> {self.dst} {self.dst_shape}" + (f"  {moved}" if moved else "")


def transpose_between(src_layout: str, dst_layout: str) -> tuple[int, ...] | None:
    """Axes that take a tensor from ``src_layout`` to ``dst_layout``; None when no transpose is needed.

    >>> transpose_between("in out", "out in")
    (1, 0)
    >>> transpose_between("O I H W", "H W I O")
    (2, 3, 1, 0)
    >>> transpose_between("out", "out") is None
    True
    """
    src, dst = src_layout.split(), dst_layout.split()
    if not src or not dst or src == dst or sorted(src) != sorted(dst):
        return None
    return tuple(src.index(axis) for axis in dst)


def _to_canonical(layout: str, ndim: int) -> tuple[int, ...] | None:
    """The transpose from ``layout`` to PyTorch's order; None when there is none, or the layout does not fit ``ndim``."""
    axes = layout.split()
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


def link(
    src: list[ParamRecord],
    dst: list[ParamRecord],
    explicit: dict[str, str],
    src_source: str,
    dst_source: str,
) -> list[WeightLink]:
    """Pair every parameter of ``dst`` with one of ``src``: explicit map, then equal names, then order.

    Raises:
        AlignmentError: counts or shapes that cannot be paired, naming the parameters on each side.
    """
    by_src = {p.name: p for p in src}
    by_dst = {p.name: p for p in dst}
    for a, b in explicit.items():
        if a not in by_src or b not in by_dst:
            side, name, pool = (src_source, a, by_src) if a not in by_src else (dst_source, b, by_dst)
            raise AlignmentError(
                f"Parameter map names '{name}', which {side} does not have. Its parameters: {', '.join(pool)}."
            )
    pairs: list[tuple[ParamRecord, ParamRecord, str]] = [(by_src[a], by_dst[b], "map") for a, b in explicit.items()]
    used_src = set(explicit)
    used_dst = set(explicit.values())
    for p in src:
        if p.name not in used_src and p.name in by_dst and p.name not in used_dst:
            if _axes_for(p, by_dst[p.name]) is not False:
                pairs.append((p, by_dst[p.name], "name"))
                used_src.add(p.name)
                used_dst.add(p.name)
    rest_src = [p for p in src if p.name not in used_src]
    rest_dst = [p for p in dst if p.name not in used_dst]
    if len(rest_src) != len(rest_dst):
        raise AlignmentError(
            f"Cannot map parameters: {src_source} has {len(src)} parameter tensors, {dst_source} has {len(dst)}. "
            f"Unpaired in {src_source}: {_names(rest_src)}; in {dst_source}: {_names(rest_dst)}. "
            "Give a param_map in the model file or --param-map A=B."
        )
    pairs += [(a, b, "order") for a, b in zip(rest_src, rest_dst)]
    links = []
    for a, b, how in pairs:
        axes = _axes_for(a, b)
        if axes is False:
            raise AlignmentError(
                f"Cannot map parameter {a.name} {a.value.shape} of {src_source} onto {b.name} {b.value.shape} "
                f"of {dst_source} (paired by {how}). Give a param_map in the model file or --param-map A=B."
            )
        links.append(WeightLink(a.name, b.name, a.value.shape, b.value.shape, axes, how))  # type: ignore[arg-type]
    order = {p.name: i for i, p in enumerate(dst)}
    return sorted(links, key=lambda w: order[w.dst])


def _axes_for(a: ParamRecord, b: ParamRecord) -> tuple[int, ...] | None | bool:
    """The transpose from a to b, None for none, False when the shapes cannot be made to agree."""
    axes = transpose_between(a.layout, b.layout)
    shape = a.value.shape if axes is None else tuple(a.value.shape[i] for i in axes)
    # nnfs keeps a bias as (1, out) where frameworks hold (out,): the same numbers, reshaped.
    return axes if _squeezed(shape) == _squeezed(b.value.shape) else False


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def carry(links: Iterable[WeightLink], src: list[ParamRecord]) -> dict[str, np.ndarray]:
    """The destination side's new parameter values, by destination name."""
    values = {p.name: p.value for p in src}
    out = {}
    for w in links:
        v = values[w.src]
        out[w.dst] = w.apply(v)
    return out


def fingerprint(params: Iterable[ParamRecord]) -> str:
    """A hash of the weights that is the same for every framework and layout holding them."""
    digests = sorted(digest([canonical(p.value, p.layout)]) for p in params)
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def digest(arrays: Iterable[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _names(params: list[ParamRecord]) -> str:
    return ", ".join(p.name for p in params) or "none"
