"""Zoom: one module (or the code of one, a gap) run at the level of its operations on both sides, on equal inputs,
and the first operation whose output differs named: ``attn: op 7 (mul), the input of op 8 (softmax)``.

Side A's module runs first and its inputs are recorded; side B's runs with those inputs in place of its own. The
operations of the two sides are paired in order by name and shape (a sequence alignment, as layers are), and the
first pair whose outputs differ is the place: every operation before it agreed, so it differs given equal inputs.
Only the forward pass is zoomed. Each adapter zooms through its optional ``zoom`` method (PyTorch through a
``TorchFunctionMode``, JAX through the jaxpr of the traced call); a NumPy network's operations are plain NumPy
calls that nothing intercepts: there, ``tap`` the values inside the layer to see them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from layerdiff.adapter import Feed, Ops
from layerdiff.errors import AlignmentError, ModelFileError, term
from layerdiff.flow import permuted_equal
from layerdiff.layout import canonical, from_canonical
from layerdiff.metrics import EPS, diff, noise_floor
from layerdiff.results import Comparison, Zoom

if TYPE_CHECKING:
    from layerdiff.runner import Side

MAX_OPS = 4000  # operations of one side paired at most: the alignment is quadratic in them


def zoom(a: Side, b: Side, feed: Feed, layer_a: str, layer_b: str, dtype: str = "float64") -> Zoom:
    """Zoom into module ``layer_a`` of side A and ``layer_b`` of side B ("" for the whole model).

    Returns:
        A ``Zoom``: the first operation that differs, or ``said`` why there is none to name.
    """
    ops: list[Ops] = []
    for side, layer, given in ((a, layer_a, None), (b, layer_b, True)):
        run = getattr(side.adapter, "zoom", None)
        if run is None:
            return Zoom(layer_a, layer_b, said=f"{side.source} ({side.adapter.name}) cannot be zoomed into: tap the values inside the layer to compare them")
        inputs = [from_canonical(x, side.layout) for x in ops[0].inputs] if given else None
        found = run(side.handle, side.spec, _laid_out(feed, side.layout), layer, inputs)
        if found is None:
            return Zoom(layer_a, layer_b, said=f"{side.source} has no module '{layer or 'model'}'")
        ops.append(_canonical(found, side.layout))
    return first_difference(ops[0], ops[1], layer_a, layer_b, dtype)


def explicit(a: Side | None, b: Side | None, feed: Feed, layers: dict[str, str], dtype: str) -> list[Zoom]:
    """The zooms a caller asked for (``--zoom``), each ``{layer of A: layer of B}``.

    Raises:
        ModelFileError: a side cannot be zoomed into (a NumPy network, a dump).
        AlignmentError: a side has no module of that name.
    """
    zooms = []
    for side in (a, b):
        if side is None or getattr(side.adapter, "zoom", None) is None:
            raise refused("a dump" if side is None else f"{side.source} ({side.adapter.name})")
    assert a is not None and b is not None
    for layer_a, layer_b in layers.items():
        found = zoom(a, b, feed, layer_a, layer_b, dtype)
        if found.said.startswith((a.source, b.source)) and " has no module " in found.said:
            raise AlignmentError(f"{term('zoom')} names '{layer_a}': {found.said}. Name a module by its path (h.1.attn).")
        zooms.append(found)
    return zooms


def named(layers: list[str]) -> dict[str, str]:
    """``--zoom`` values as ``{layer of A: layer of B}``: ``"h.1.attn"`` names both, ``"fc=dense"`` each.

    >>> named(["h.1.attn", "fc=dense"])
    {'h.1.attn': 'h.1.attn', 'fc': 'dense'}
    """
    pairs = [x.partition("=") for x in layers]
    return {a: (b if sep else a) for a, sep, b in pairs}


def attach(result: Comparison, a: Side | None, b: Side | None, feed: Feed, asked: list[Zoom]) -> None:
    """Set ``result.zooms``: those asked for, and one into each forward culprit that has operations of its own."""
    dtype = max((result.info_a.compute_dtype, result.info_b.compute_dtype), key=lambda d: EPS.get(d, EPS["float32"]))
    seen = {(z.layer_a, z.layer_b) for z in asked}
    result.zooms = asked + [z for z in for_culprits(result, a, b, feed, dtype) if (z.layer_a, z.layer_b) not in seen]


def refused(what: str) -> ModelFileError:
    """The error of a zoom asked of a side that does not show its operations."""
    return ModelFileError(f"{term('zoom')} needs the operations of both sides, and {what} does not show them: tap the values inside the layer instead.")


def for_culprits(result: Comparison, a: Side | None, b: Side | None, feed: Feed, dtype: str) -> list[Zoom]:
    """A zoom into each forward culprit that is code of a module of its own (a gap, or a module with operations
    inside it), where both sides show their operations; a zoom that finds a single operation says nothing more and
    is left out."""
    if a is None or b is None or getattr(a.adapter, "zoom", None) is None or getattr(b.adapter, "zoom", None) is None:
        return []
    zooms = []
    for c in result.culprits or []:
        if c.pass_ != "forward" or c.layer_a.startswith("consumers of "):
            continue
        names = ("", "") if c.layer_a.startswith("between ") else (c.layer_a.split("+")[0], c.layer_b.split("+")[0])
        found = zoom(a, b, feed, *names, dtype)
        if found.ops > 1:
            zooms.append(found)
    return zooms


def first_difference(a: Ops, b: Ops, layer_a: str, layer_b: str, dtype: str = "float64") -> Zoom:
    """The first operation of ``a`` that differs: from its partner of the same name in ``b``, given equal inputs;
    or, paired with another operation or none (other frameworks split their work otherwise), whose value no
    operation of ``b`` computes."""
    partner = dict(_paired(a, b))
    by_size: dict[int, list[np.ndarray]] = {}
    for op in b.ops:
        by_size.setdefault(op.output.size, []).append(op.output)
    data: set[int] = set()  # operations that depend on the module's inputs: the others read parameters alone
    for i, op in enumerate(a.ops):
        if not any(k < 0 or k in data for k in op.reads):
            continue  # a weight reshaped or broadcast: the same on both sides, and not always computed apart
        data.add(i)
        x, tol = op.output, _tol(dtype, op.output)
        j = partner.get(i)
        if j is not None and b.ops[j].name == op.name:
            y = b.ops[j].output
            same, rel = (permuted_equal(x, y, tol), float("inf")) if x.shape != y.shape else _same(x, y, tol)
            if same:
                continue
            said = f"differs from b's op {j} ({b.ops[j].name}) given equal inputs"
        elif any(_same(x, y, tol)[0] if x.shape == y.shape else permuted_equal(x, y, tol) for y in by_size.get(x.size, [])):
            continue
        else:
            near = b.ops[j].output if j is not None else None
            rel = _same(x, near, tol)[1] if near is not None and near.shape == x.shape else float("inf")
            said = "computes a value that no operation of b computes, given equal inputs"
        reader = next((k for k in range(i + 1, len(a.ops)) if i in a.ops[k].reads), None)
        consumer = "" if reader is None else f"op {reader} ({a.ops[reader].name})"
        return Zoom(layer_a, layer_b, op=i, name=op.name, consumer=consumer, max_rel=rel, tol=tol, shape=tuple(x.shape), ops=len(a.ops), said=said)
    return Zoom(layer_a, layer_b, said="no operation differs given equal inputs", ops=len(a.ops))


def _same(x: np.ndarray, y: np.ndarray, tol: float) -> tuple[bool, float]:
    d = diff("output", x, y, tol)
    return d.ok, d.max_rel


def _tol(dtype: str, x: np.ndarray) -> float:
    # One operation reads a few of the module's values: the noise floor of its output, with room for a reduction.
    return noise_floor(dtype, 64 * max(x.size, 1))


def _paired(a: Ops, b: Ops) -> list[tuple[int, int]]:
    """The order-keeping pairing of the two sides' operations of highest score: equal shapes needed, equal names
    counted (so that a port with other operation names still pairs by shape and order)."""
    xs, ys = a.ops[:MAX_OPS], b.ops[:MAX_OPS]
    n, m = len(xs), len(ys)

    def score(i: int, j: int) -> float | None:
        if xs[i].output.shape != ys[j].output.shape and xs[i].output.size != ys[j].output.size:
            return None
        return 1.0 + (1.0 if xs[i].name == ys[j].name else 0.0)

    best = np.zeros((n + 1, m + 1))
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            s = score(i, j)
            best[i, j] = max(best[i + 1, j + 1] + s if s is not None else -np.inf, best[i + 1, j], best[i, j + 1])
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        s = score(i, j)
        if s is not None and best[i, j] == best[i + 1, j + 1] + s:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif best[i, j] == best[i + 1, j]:
            i += 1
        else:
            j += 1
    return pairs


def _canonical(found: Ops, layout: str) -> Ops:
    """A channels-last side's values in PyTorch's order, as its recordings are compared: those of its layout's rank."""
    if not layout:
        return found
    rank = len(layout.split())

    def moved(x: np.ndarray) -> np.ndarray:
        return canonical(x, layout) if x.ndim == rank else x

    return Ops([moved(x) for x in found.inputs], [replace(op, output=moved(op.output)) for op in found.ops])


def _laid_out(feed: Feed, layout: str) -> Feed:
    """The feed as a side takes it (channels-last models get their inputs transposed, as ``Side.run`` does)."""
    if not layout:
        return feed
    return Feed([from_canonical(x, layout) for x in feed.inputs], feed.targets, feed.upstream, feed.names)


def describe(z: Zoom) -> str:
    """A zoom in one sentence, as the reports print it."""
    where = z.layer_a or "model"
    if z.layer_b and z.layer_b != z.layer_a:
        where += f" (b: {z.layer_b})"
    if z.op is None:
        return f"{where}: {z.said}"
    consumer = f", the input of {z.consumer}," if z.consumer else ""
    figures = f", max rel {z.max_rel:.1e} > tolerance {z.tol:.1e}" if np.isfinite(z.max_rel) else ""
    return f"{where}: op {z.op} ({z.name}){consumer} the first of {z.ops} operations to differ: it {z.said}; output {z.shape}{figures}"
