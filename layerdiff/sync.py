"""Identical weights on both sides: which parameter of one side feeds which of the other, and in what layout.

Pairs come from an explicit map, then equal names, then order (where order pairs shapes that cannot fit, by
shape); each value moves between the two layouts by the transpose their axis names give
(``layout.transpose_between``), so a square weight is transposed when its layouts say so, not when its shape
happens to. A choice made on a guess (a square hand-written weight's layout, a pairing among equal shapes) is
noted on its link with how to pin it. A recurrent layer's second bias that the other side does not have is set to
zero (PyTorch adds bias_ih and bias_hh where hand-written code keeps one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
    how: str  # "name", "order", "map", "shape" (order did not fit), or "zero" (set to zero, no source)
    note: str = ""  # a guess, and how to pin it; how a gradient was found

    def apply(self, value: np.ndarray) -> np.ndarray:
        """The source's value (or gradient) as the destination holds it, in a contiguous array of its own layout."""
        if self.how == "zero":
            return np.zeros(self.dst_shape, dtype=value.dtype)
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
        if self.how == "zero":
            return f"0 -> {self.dst} {self.dst_shape}  ({self.note})"
        moved = f"  {self.moved}" if self.moved else ""
        return f"{self.src} {self.src_shape} -> {self.dst} {self.dst_shape}{moved}" + (f"  ({self.note})" if self.note else "")


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
    rest_dst, zeroed = _second_biases(rest_src, rest_dst, [y for _, y, _ in pairs])
    if len(rest_src) != len(rest_dst):
        raise AlignmentError(
            f"Cannot map parameters: {src_source} has {len(src)} parameter tensors, {dst_source} has {len(dst)}. "
            f"Unpaired in {src_source}: {_names(rest_src)}; in {dst_source}: {_names(rest_dst)}. "
            f"Give a param_map in the model file or {_param_map()}."
        )
    pairs += _by_order_or_shape(rest_src, rest_dst)
    links = [_linked(x, y, how, src_source, dst_source) for x, y, how in pairs]
    links += [WeightLink("", z.name, (), z.value.shape, None, "zero", f"{src_source} has one bias where this layer adds two") for z in zeroed]
    order = {p.name: i for i, p in enumerate(dst)}
    return sorted(links, key=lambda w: order[w.dst])


def _linked(x: ParamRecord, y: ParamRecord, how: str, src_source: str, dst_source: str) -> WeightLink:
    fits, axes = _axes_for(x, y)
    if not fits:
        raise AlignmentError(
            f"Cannot map parameter {x.name} {x.value.shape} of {src_source} onto {y.name} {y.value.shape} "
            f"of {dst_source} (paired by {how}). Pair them with param_map in a model file or {_param_map()}; "
            "if the pairing is right, declare the layout of a hand-written weight, e.g. layouts = {'fc1.W': 'out in'}."
        )
    own = [f"{src_source}: {x.note}" if x.note else "", f"{dst_source}: {y.note}" if y.note else ""]
    notes = [n for n in (_layout_guess(x, y, axes, src_source, dst_source), _pairing_guess(how, x, y), *own) if n]
    return WeightLink(x.name, y.name, x.value.shape, y.value.shape, axes, how, "; ".join(notes))


def _by_order_or_shape(src: list[ParamRecord], dst: list[ParamRecord]) -> list[tuple[ParamRecord, ParamRecord, str]]:
    """Pairs in order; where order pairs shapes that cannot fit, each source takes the first unpaired destination
    it fits (numpy-ml's RNNCell lists Waa before Wax, PyTorch weight_ih before weight_hh)."""
    if all(_axes_for(x, y)[0] for x, y in zip(src, dst)):
        return [(x, y, "order") for x, y in zip(src, dst)]
    free = list(dst)
    pairs = []
    for x in src:
        y = next((d for d in free if _axes_for(x, d)[0]), None)
        if y is None:
            return [(x, y, "order") for x, y in zip(src, dst)]  # the error names the first pair that cannot fit
        rivals = sum(1 for d in free if d is not y and _axes_for(x, d)[0])
        free.remove(y)
        pairs.append((x, y, "shape, a guess" if rivals else "shape"))
    return pairs


def _pairing_guess(how: str, x: ParamRecord, y: ParamRecord) -> str:
    if how != "shape, a guess":
        return ""
    return f"paired by shape among several of its shape: pin it with param_map = {{'{x.name}': '{y.name}'}}"


def _layout_guess(x: ParamRecord, y: ParamRecord, axes: tuple[int, ...] | None, src_source: str, dst_source: str) -> str:
    """When a square weight's transpose came from a guessed layout (both orientations fit), say so and how to pin it."""
    if is_guess(x.layout) == is_guess(y.layout) or len(set(x.value.shape)) != 1 or x.value.ndim < 2:
        return ""  # a definite layout on both sides, or the same convention guessed on both
    guessed, source = (x, src_source) if is_guess(x.layout) else (y, dst_source)
    shown = guessed.layout.rstrip("?")
    return f"layout of {guessed.name} guessed '{shown}': pin it in {source} with layouts = {{'{guessed.name}': '{shown}'}}"


def _second_biases(src: list[ParamRecord], dst: list[ParamRecord], paired: list[ParamRecord]) -> tuple[list[ParamRecord], list[ParamRecord]]:
    """A recurrent layer adds two biases (PyTorch's bias_ih and bias_hh) where hand-written code keeps one: when
    the destination has more parameters than the source, its second biases are set to zero and left out."""
    if len(dst) <= len(src):
        return dst, []
    names = {p.name for p in dst} | {p.name for p in paired}
    second = [p for p in dst if p.gates and "bias_hh" in p.name and p.name.replace("bias_hh", "bias_ih") in names]
    if len(dst) - len(second) != len(src):
        return dst, []
    return [p for p in dst if p not in second], second


def annotate(links: list[WeightLink], src: list[ParamRecord], dst: list[ParamRecord], src_source: str, dst_source: str) -> list[WeightLink]:
    """The links with what each side's run said of how it found a gradient (paired by shape, a weight change)."""
    said = {("a", p.name): p.note for p in src if p.note} | {("b", p.name): p.note for p in dst if p.note}
    out = []
    for w in links:
        notes = [w.note] if w.note else []
        for side, source, name in (("a", src_source, w.src), ("b", dst_source, w.dst)):
            text = f"{source}: {said[side, name]}" if (side, name) in said else ""
            if text and text not in w.note:
                notes.append(text)
        out.append(replace(w, note="; ".join(notes)))
    return out


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
        out[w.dst] = w.apply(values[w.src] if w.how != "zero" else np.zeros(w.dst_shape))
    return out


def _param_map() -> str:
    return term("param_map", "A=B", "{'A': 'B'}")


def _names(params: list[ParamRecord]) -> str:
    return ", ".join(p.name for p in params) or "none"
