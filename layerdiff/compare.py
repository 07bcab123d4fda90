"""The plain comparison of two recordings, layer by layer: per tensor errors, first divergences, and differences of
form (settings, hashes, shapes, dtypes). The teacher-forced replay that names culprits is ``isolate``'s.

Pure NumPy. Tensors are read one pair at a time, so memory does not grow with the number of layers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import permutations
from pathlib import Path
from typing import Callable

import numpy as np
from deepdiff import DeepDiff

from layerdiff import flow, sync
from layerdiff.align import Alignment, align, fuse, spanned
from layerdiff.divergence import first_backward, first_forward, raised
from layerdiff.errors import DumpError, OptionError, term
from layerdiff.health import nonfinite_origin
from layerdiff.metrics import Tolerance, beside, diff, grad_floor, noise_floor, stats_diff
from layerdiff.progress import Progress
from layerdiff.layout import canonical_shape, from_canonical, squeezed
from layerdiff.records import Failure, ParamRecord, Recording, RegionRecord, RunInfo, placeholder
from layerdiff.results import Comparison, Culprit, LayerDiff, Pass, TensorDiff, Verdict
from layerdiff.stats import TensorInfo, all_finite, statistics

HASHES = ("weights_sha256", "inputs_sha256", "upstream_sha256")
WHOLE = "compiled model"  # the region record of a compiled model's output and gradients as a whole


@dataclass
class Row:
    """One aligned pair of layers: index ``i`` in side A, ``j`` in side B, and the parameter links it owns."""

    i: int
    j: int
    links: list[sync.WeightLink]


def compare(
    a: Recording,
    b: Recording,
    *,
    links: list[sync.WeightLink] | None = None,
    layer_map: dict[str, str] | None = None,
    alignment: Alignment | None = None,
    rtol: float | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Compare two recordings of one iteration, without a replay: no culprits (``isolate.compare_isolated`` names them).

    Args:
        a, b: recordings (dumps or in-memory traces) made with the same weights, inputs and upstream gradient.
        links: how ``a``'s parameters map onto ``b``'s; worked out from names, order and layouts when absent.
        layer_map: layer names of ``a`` mapped to layer names of ``b``, overriding alignment.
        alignment: the alignment already made.
        rtol: a fixed tolerance instead of the noise floor.
        progress: called with ``("compare", layers done, layers)`` as the comparison goes.

    Returns:
        A ``Comparison`` with per-layer errors and the first divergence of each pass; ``culprits`` is None.
    """
    alignment = alignment or fuse(a, b, align(a, b, layer_map), tolerance_for(a, b, rtol))
    a, b = Reader(spanned(a, alignment.fused_a)), Reader(spanned(b, alignment.fused_b))
    tolerance = tolerance_for(a, b, rtol)
    table, unowned = rows(a, b, alignment, links)
    layers = []
    for n, row in enumerate(table):
        if progress is not None:
            progress("compare", n, len(table))
        layer = compare_row(a, b, row, tolerance)
        layer.verdict = "ok" if layer.ok else "differs"
        layers.append(layer)
    if progress is not None:
        progress("compare", len(table), len(table))
    return assemble(a, b, alignment, layers + loose(a, b, unowned, tolerance, "differs"), None, rtol)


def tolerance_for(a: Recording, b: Recording, rtol: float | None) -> Tolerance:
    """The tolerances of comparing ``a`` with ``b``: each layer's noise floor, widened by their run-to-run noise.

    Raises:
        OptionError: ``rtol`` is not a tolerance above 0 and at most 1 (NaN would pass every tensor).
    """
    if rtol is not None and not 0 < rtol <= 1:
        raise OptionError(f"{term('rtol')} must be a tolerance above 0 and at most 1, such as 1e-6; got {rtol}.")
    dtypes = (a.info.compute_dtype, b.info.compute_dtype)
    measured = [r.info.run_to_run for r in (a, b) if r.info.run_to_run is not None]
    return Tolerance((dtypes[0], dtypes[1]), rtol, max(measured, default=0.0))


def rows(a: Recording, b: Recording, alignment: Alignment, links: list[sync.WeightLink] | None) -> tuple[list[Row], list[sync.WeightLink]]:
    """The aligned pairs in execution order, each with the parameter links of its layer on side A, else on side B
    (a tapped network's parameters belong to no tap); and the links of parameters whose layer is aligned on neither."""
    row_a = {a.layers[i].name: n for n, (i, _) in enumerate(alignment.pairs)}
    row_b = {b.layers[j].name: n for n, (_, j) in enumerate(alignment.pairs)}
    owner_a = {p: l.name for l in a.layers for p in l.params}
    owner_b = {p: l.name for l in b.layers for p in l.params}
    table = [Row(i, j, []) for i, j in alignment.pairs]
    unowned: list[sync.WeightLink] = []
    for w in recorded_links(a, b, links):
        n = row_a.get(owner_a.get(w.src, ""), row_b.get(owner_b.get(w.dst, ""), -1))
        (table[n].links if n >= 0 else unowned).append(w)
    return table, unowned


def recorded_links(a: Recording, b: Recording, links: list[sync.WeightLink] | None) -> list[sync.WeightLink]:
    """The parameter links between two recordings (worked out from names, order and layouts when not given), of
    the parameters both recorded (``--layers`` records some only)."""
    if links is None:
        links = sync.link(specs(a), specs(b), {}, a.source, b.source)
    names_a, names_b = set(a.param_names()), set(b.param_names())
    return [w for w in links if w.src in names_a and w.dst in names_b]


def compare_row(a: Recording, b: Recording, row: Row, tolerance: Tolerance) -> LayerDiff:
    """One aligned pair of layers in the plain run: each tensor both record, and the gradients of its parameters."""
    la, lb = a.layers[row.i], b.layers[row.j]
    result = LayerDiff(la.name, lb.name, la.kind, lb.kind)
    for key in la.tensors:
        if key in lb.tensors:
            result.tensors.append(pair(key, a, row.i, b, row.j, tolerance.of(la, key)))
    result.param_grads = [param_diff(a, b, w, tolerance.of(la, "param"), grad_floor(la, int(np.prod(w.src_shape)))) for w in row.links]
    return result


def loose(a: Recording, b: Recording, unowned: list[sync.WeightLink], tolerance: Tolerance, verdict: Verdict) -> list[LayerDiff]:
    """Parameters whose layers are aligned on neither side still get their gradients compared, in a row of their own."""
    if not unowned:
        return []
    layer = LayerDiff("(parameters of no aligned layer)", "", "params", "params")
    layer.param_grads = [param_diff(a, b, w, tolerance.of(a.layers[0], "param"), 0.0) for w in unowned]
    layer.verdict = "ok" if layer.ok else verdict
    return [layer]


def pair(key: str, a: Recording, i: int, b: Recording, j: int, tol: float) -> TensorDiff:
    """One tensor of layer ``i`` of ``a`` against the same of layer ``j`` of ``b``: from their values when both are
    stored, from statistics when either is not."""
    ia, ib = a.layers[i].tensors[key], b.layers[j].tensors[key]
    if ia.stored and ib.stored:
        return diff(key, *both(lambda: a.tensor(i, key), lambda: b.tensor(j, key)), tol)
    return stats_diff(key, _stats(ia, a, i, key), _stats(ib, b, j, key), tol)


def _stats(info: TensorInfo, r: Recording, index: int, key: str) -> TensorInfo:
    """A tensor's full statistics: as recorded, or made from its values (which ``Recording`` hands out in PyTorch's order)."""
    return info if info.sketch else statistics(r.tensor(index, key))


def param_diff(a: Recording, b: Recording, w: sync.WeightLink, tol: float, floor: float) -> TensorDiff:
    """One parameter's gradient on both sides; a gradient that one side never produced, or whose shape is not its
    weight's, is said so (``note``), never compared as zeros or reshaped."""
    ia, ib = a.param_info(w.src), b.param_info(w.dst)
    key = f"{w.src} ~ {w.dst}"
    if ia is None or ib is None:
        lacking = [f"{r.source} gives no gradient for {name}" for r, name, i in ((a, w.src, ia), (b, w.dst, ib)) if i is None]
        return TensorDiff(key, w.src_shape, w.dst_shape, "", "", tol, ok=ia is None and ib is None, problem="missing gradient", note="; ".join(lacking))
    for r, name, info in ((a, w.src, ia), (b, w.dst, ib)):
        wrong = _misshapen(r, name, info)
        if wrong:
            return TensorDiff(key, w.src_shape, w.dst_shape, ia.dtype, ib.dtype, tol, ok=False, problem="shape", note=wrong)
    if not (ia.stored and ib.stored):
        return stats_diff(key, _grad_stats(ia, a, w.src), _grad_stats(ib, b, w.dst), tol, floor)
    value_a, value_b = both(lambda: grad(a, w.src), lambda: grad(b, w.dst))
    return diff(key, w.view(value_a), value_b, tol, floor)


def both(read_a: Callable[[], np.ndarray], read_b: Callable[[], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The two sides' values of a pair, B's read on the other core while this thread reads A's (each side's
    ``Reader`` is touched by one thread only)."""
    b = beside(read_b)
    try:
        a = read_a()
    finally:
        value_b = b.result()  # waited for even when A's read failed: no read of B left running behind
    return a, value_b


def _misshapen(r: Recording, name: str, info: TensorInfo) -> str:
    """What is wrong with the shape of a parameter's gradient, in a sentence ("" when it is the weight's)."""
    spec = r.spec(name)
    weight = tuple(spec.value.shape)
    if squeezed(tuple(info.shape)) == squeezed(canonical_shape(weight, spec.layout)):
        return ""  # (n, 1) or (1, n) for an (n,) bias holds the same numbers, as nnfs and mytorch keep them
    shape = tuple(from_canonical(placeholder(tuple(info.shape), np.float64), spec.layout).shape)
    return f"{r.source}: {shape_sentence(name, shape, weight)}"


def shape_sentence(name: str, grad: tuple[int, ...], weight: tuple[int, ...]) -> str:
    """A parameter gradient whose shape is not its weight's, said: never reshaped to fit.

    >>> shape_sentence("fc.W", (24, 5), (5, 24))
    "fc.W's gradient has shape (24, 5), its weight (5, 24): it is transposed"
    """
    said = f"{name}'s gradient has shape {grad}, its weight {weight}"
    if len(weight) > 1 and len(grad) == len(weight) and any(tuple(weight[k] for k in axes) == grad for axes in permutations(range(len(weight)))):
        return said + (": it is transposed" if len(weight) == 2 else ": its axes are in another order")
    return said


def checkable_grad(source: str, name: str, grad: np.ndarray | None, value: np.ndarray) -> tuple[np.ndarray, str]:
    """A parameter's gradient as a gradient check reads it, and what is wrong with it: none checks as zero, one of
    another shape as NaN (no coordinate of it is the weight's), each said; an (n, 1) one of an (n,) bias is the same
    numbers."""
    if grad is not None and grad.shape != value.shape and squeezed(grad.shape) == squeezed(value.shape):
        return grad.reshape(value.shape), ""
    if grad is None:
        return np.zeros_like(value), f"{source} gives no gradient for {name}; checked as zero"
    if grad.shape != value.shape:
        return np.full_like(value, np.nan), f"{shape_sentence(name, grad.shape, value.shape)}; checked as not a gradient of it (NaN)"
    return grad, ""


def grad(r: Recording, name: str) -> np.ndarray:
    value = r.param_grad(name)
    assert value is not None  # param_info said there is one
    return value


def _grad_stats(info: TensorInfo, r: Recording, name: str) -> TensorInfo:
    return info if info.sketch else statistics(grad(r, name), r.spec(name).layout)


def specs(r: Recording) -> list[ParamRecord]:
    return [r.spec(name) for name in r.param_names()]


def assemble(
    a: Recording,
    b: Recording,
    alignment: Alignment,
    layers: list[LayerDiff],
    culprits: list[Culprit] | None,
    rtol: float | None,
    failures: tuple[Failure | None, Failure | None] = (None, None),
) -> Comparison:
    """The comparison of the rows compared: first divergences, where NaN/Inf start, differences of form, and a
    compiled side's code against its own eager module tree; a backward pass that raised is the backward divergence,
    unless one shows before it."""
    compiled = _compiled(a) + _compiled(b)
    structure = _structure(a, b, alignment)
    if culprits is None:  # two dumps: no replay, but a compiled side is judged against itself all the same
        structure += [f"{c.layer_a} ({c.layer_b}) {c.tensor}: {c.hint}" for c in compiled]
    return Comparison(
        a.source,
        b.source,
        layers,
        first_forward(layers),
        first_backward(layers, raised(failures, a.source, b.source), flow.plain(a, b, alignment)),
        None if culprits is None else compiled + culprits,
        {"a": nonfinite_origin(a), "b": nonfinite_origin(b)},
        alignment.only_a,
        alignment.only_b,
        structure,
        a.info,
        b.info,
        a.loss,
        b.loss,
        rtol,
        fused_a=[a.layers[i].name for i in alignment.fused_a],
        fused_b=[b.layers[j].name for j in alignment.fused_b],
    )


def _compiled(r: Recording) -> list[Culprit]:
    """Where a compiled side's code computes otherwise than the eager module tree it was compiled from."""
    found: list[Culprit] = []
    for region in r.regions():
        if region.name == WHOLE and found:
            break  # a region already says where: the whole model's output only repeats it
        for key, (compiled, eager) in region.tensors.items():
            d = diff(key, compiled, eager, noise_floor(r.info.compute_dtype, max(eager.size, 1)))
            if d.ok:
                continue
            where = f"; the first operation that differs: {region.first_op}" if region.first_op else ""
            hint = f"{r.source}'s compiled code computes otherwise than the eager module tree it was compiled from{where}."
            pass_: Pass = "forward" if key.startswith("output") else "param_grad"
            found.append(Culprit(region.name, region.modules, pass_, key, d.max_abs, d.max_rel, d.tol, hint, (compiled, eager)))
            break
    return found


def _structure(a: Recording, b: Recording, alignment: Alignment) -> list[str]:
    """Differences of form, reported before any number: settings, hashes, and shapes or dtypes of matched tensors."""
    keys = ("dtype", "seed", *HASHES)
    meta = DeepDiff({k: getattr(a.info, k) for k in keys}, {k: getattr(b.info, k) for k in keys})
    lines = [
        f"{change.path(output_format='list')[0]}: {change.t1} in {a.source}, {change.t2} in {b.source}"
        for change in meta.tree.get("values_changed", [])
    ]
    dtypes: dict[tuple[str, str], int] = {}
    for i, j in alignment.pairs:
        la, lb = a.layers[i], b.layers[j]
        shapes = DeepDiff(
            {k: list(t.shape) for k, t in la.tensors.items() if k in lb.tensors},
            {k: list(t.shape) for k, t in lb.tensors.items() if k in la.tensors},
        )
        for change in (c for kind in shapes.tree.values() for c in kind):
            key = change.path(output_format="list")[0]
            lines.append(
                f"Layer '{la.name}' {key} has shape {tuple(la.tensors[key].shape)} in {a.source} "
                f"but {tuple(lb.tensors[key].shape)} in {b.source}."
            )
        for k, t in la.tensors.items():
            if k in lb.tensors and t.dtype != lb.tensors[k].dtype:
                dtypes[t.dtype, lb.tensors[k].dtype] = dtypes.get((t.dtype, lb.tensors[k].dtype), 0) + 1
    lines += [f"{n} tensors are {x} in {a.source} but {y} in {b.source}." for (x, y), n in dtypes.items()]
    return sorted(set(lines), key=lines.index)


def check_same_run(a: Recording, b: Recording) -> None:
    """Refuse recordings made with different weights, inputs or upstream gradient.

    Raises:
        DumpError: naming each hash that differs and how to make a matching dump.
    """
    differ = [h for h in HASHES if getattr(a.info, h) and getattr(b.info, h) and getattr(a.info, h) != getattr(b.info, h)]
    if differ:
        what = ", ".join(h.removesuffix("_sha256") for h in differ)
        script = b.info.script or "B.py"
        raise DumpError(
            f"{a.source} and {b.source} were made with different {what}, so their layers cannot be compared. "
            f"Make one from the other (`layerdiff dump {script} -o {Path(b.source).stem}-synced.h5 "
            f"--weights-from {getattr(a, 'path', a.source)}`), or pass {term('force', '', 'True')} to compare them anyway."
        )


class Reader:
    """A recording as the comparison reads it: the layer being compared keeps its tensors until the next one is read
    (the plain and the teacher-forced comparison both read side A's), and whether each tensor read was finite is
    noted, so that finding where NaN or Inf first appears reads no tensor a second time."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.source = recording.source
        self.layers = recording.layers
        self._index = -1
        self._row: dict[str, np.ndarray] = {}
        self._finite: dict[tuple[int, str], bool] = {}  # by (layer index, key), and (-1, name) for parameter gradients

    @property
    def info(self) -> RunInfo:
        return self.recording.info

    @property
    def loss(self) -> float | None:
        return self.recording.loss

    def tensor(self, index: int, key: str) -> np.ndarray:
        if index != self._index:
            self._index, self._row = index, {}
        if key not in self._row:
            value = self._row[key] = self.recording.tensor(index, key)
            self._finite[index, key] = all_finite(value)
        return self._row[key]

    def finite(self, index: int, key: str) -> bool:
        noted = self.layers[index].tensors[key].finite
        if noted is not None:
            return noted
        if (index, key) not in self._finite:
            self.tensor(index, key)
        return self._finite[index, key]

    def param(self, name: str) -> ParamRecord:
        return self.recording.param(name)

    def param_grad(self, name: str) -> np.ndarray | None:
        value = self.recording.param_grad(name)
        if value is not None:
            self._finite[-1, name] = all_finite(value)
        return value

    def spec(self, name: str) -> ParamRecord:
        return self.recording.spec(name)

    def param_info(self, name: str) -> TensorInfo | None:
        info = self.recording.param_info(name)
        if info is not None and info.finite is None and (-1, name) in self._finite:
            return replace(info, finite=self._finite[-1, name])  # the comparison read it already
        return info

    def param_names(self) -> list[str]:
        return self.recording.param_names()

    def regions(self) -> list[RegionRecord]:
        return self.recording.regions()
