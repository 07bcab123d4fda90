"""Identical weights on both sides: which parameter of one side feeds which of the other, and in what layout.

Pairs come from an explicit map, then equal names, then order; each value moves between the two layouts by the
transpose their axis names give (``layout.transpose_between``), so a square weight is transposed when its layouts
say so, not when its shape happens to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from layerdiff.errors import AlignmentError, term
from layerdiff.layout import is_guess, squeezed, transpose_between
from layerdiff.records import ParamRecord


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
        """The source's value (or gradient) as the destination holds it, in a contiguous array of its own layout."""
        return np.ascontiguousarray(self.view(value))

    def view(self, value: np.ndarray) -> np.ndarray:
        """``apply`` without the copy, where a transposed view will do (to compare it)."""
        moved = value if self.axes is None else value.transpose(self.axes)
        return moved.reshape(self.dst_shape)

    @property
    def moved(self) -> str:
        """How the value is moved between layouts: "transposed", "axes (…)", "reshaped" or ""."""
        if self.axes is not None:
            return "transposed" if len(self.axes) == 2 else f"axes {self.axes}"
        return "reshaped" if self.src_shape != self.dst_shape else ""

    def describe(self) -> str:
        return f"{self.src} {self.src_shape} -> {self.dst} {self.dst_shape}" + (f"  {self.moved}" if self.moved else "")


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
    for src_name, dst_name in explicit.items():
        if src_name not in by_src or dst_name not in by_dst:
            side, name, pool = (src_source, src_name, by_src) if src_name not in by_src else (dst_source, dst_name, by_dst)
            raise AlignmentError(
                f"Parameter map names '{name}', which {side} does not have. Its parameters: {', '.join(pool)}."
            )
    pairs: list[tuple[ParamRecord, ParamRecord, str]] = [(by_src[a], by_dst[b], "map") for a, b in explicit.items()]
    used_src = set(explicit)
    used_dst = set(explicit.values())
    for p in src:
        if p.name not in used_src and p.name in by_dst and p.name not in used_dst:
            if _axes_for(p, by_dst[p.name])[0]:
                pairs.append((p, by_dst[p.name], "name"))
                used_src.add(p.name)
                used_dst.add(p.name)
    rest_src = [p for p in src if p.name not in used_src]
    rest_dst = [p for p in dst if p.name not in used_dst]
    if len(rest_src) != len(rest_dst):
        raise AlignmentError(
            f"Cannot map parameters: {src_source} has {len(src)} parameter tensors, {dst_source} has {len(dst)}. "
            f"Unpaired in {src_source}: {_names(rest_src)}; in {dst_source}: {_names(rest_dst)}. "
            f"Give a param_map in the model file or {_param_map()}."
        )
    pairs += [(a, b, "order") for a, b in zip(rest_src, rest_dst)]
    links = []
    for x, y, how in pairs:
        fits, axes = _axes_for(x, y)
        if not fits:
            raise AlignmentError(
                f"Cannot map parameter {x.name} {x.value.shape} of {src_source} onto {y.name} {y.value.shape} "
                f"of {dst_source} (paired by {how}). Pair them with param_map in a model file or {_param_map()}; "
                "if the pairing is right, declare the layout of a hand-written weight, e.g. layouts = {'fc1.W': 'out in'}."
            )
        links.append(WeightLink(x.name, y.name, x.value.shape, y.value.shape, axes, how))
    order = {p.name: i for i, p in enumerate(dst)}
    return sorted(links, key=lambda w: order[w.dst])


def _axes_for(a: ParamRecord, b: ParamRecord) -> tuple[bool, tuple[int, ...] | None]:
    """Whether a's value can become b's, and the transpose that does it (None for none)."""
    axes = transpose_between(a.layout, b.layout)
    shape = a.value.shape if axes is None else tuple(a.value.shape[i] for i in axes)
    # nnfs keeps a bias as (1, out) where frameworks hold (out,): the same numbers, reshaped.
    if squeezed(shape) == squeezed(b.value.shape):
        return True, axes
    # A guessed layout ("in out?" for a hand-written W) gives way when only the shapes as they are agree.
    if (is_guess(a.layout) or is_guess(b.layout)) and squeezed(a.value.shape) == squeezed(b.value.shape):
        return True, None
    return False, None


def carry(links: Iterable[WeightLink], src: list[ParamRecord]) -> dict[str, np.ndarray]:
    """The destination side's new parameter values, by destination name."""
    values = {p.name: p.value for p in src}
    out = {}
    for w in links:
        v = values[w.src]
        out[w.dst] = w.apply(v)
    return out


def _param_map() -> str:
    return term("param_map", "A=B", "{'A': 'B'}")


def _names(params: list[ParamRecord]) -> str:
    return ", ".join(p.name for p in params) or "none"
