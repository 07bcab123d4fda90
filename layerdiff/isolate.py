"""Culprits: side B replayed with every aligned layer handed side A's recorded values, and each layer judged alone.

Forward, each aligned layer of B passes on A's output instead of its own, so the next layer receives exactly what
A's did; backward, the gradient arriving at each aligned layer's output is A's. What B records in the replay is
then each layer's *local* result: its own computation on correct inputs. A layer whose local result differs from A's
is a culprit; one that differs only in the plain run inherited its error.

A replay proves it was forced: the adapter notes each forced value it handed out (``Trace.forced``), and the layer
after a forced one must have received the forced value, not the layer's own output. A replay that fails either is
refused (``AdapterError``): culprits from an unforced replay would be wrong layers named with confidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Callable, Iterator, Mapping

import numpy as np

from layerdiff import blame
from layerdiff.adapter import Feed, Forcing, Lazy
from layerdiff.align import Alignment, align, fuse, spanned
from layerdiff.capture import Raised
from layerdiff.flow import Flow, consumers, gap_before, made_by_code, permuted_equal
from layerdiff.compare import Reader, assemble, compare_row, grad, loose, pair, param_diff, rows, tolerance_for
from layerdiff.diagnose import Sides, describe
from layerdiff.errors import AdapterError
from layerdiff.layout import canonical, squeezed
from layerdiff.metrics import EPS, Tolerance, grad_floor
from layerdiff.progress import Progress, stage
from layerdiff.records import Failure, InMemory, LayerInfo, Recording, Trace, keys_of
from layerdiff.results import Comparison, Culprit, LayerDiff, Pass, TensorDiff
from layerdiff.sync import WeightLink

if TYPE_CHECKING:
    from layerdiff.runner import Side

ONE_D = {"Conv1d", "ConvTranspose1d", "MaxPool1d", "AvgPool1d", "BatchNorm1d"}  # (N, C, L): axis 2 is spatial
WITNESSES = 256  # entries of each forced output kept to check that the next layer received it


def isolated(
    a: Recording,
    b: Recording,
    live: Side,
    feed: Feed,
    *,
    links: list[WeightLink] | None,
    layer_map: dict[str, str] | None = None,
    rtol: float | None = None,
    live_side: str = "b",
    progress: Progress | None = None,
    failures: tuple[Failure | None, Failure | None] = (None, None),
) -> Comparison:
    """Align ``a`` and ``b``, replay the live side (B, or A when ``live_side == "a"``) forced with the other side's
    values, and compare all three: per layer the plain errors, the local ones, and the culprits. ``failures``: each
    side's backward that raised, if one did (its trace holds what was recorded up to it).

    Raises:
        AdapterError: the live side's adapter did not force the replay.
    """
    alignment = fuse(a, b, align(a, b, layer_map), tolerance_for(a, b, rtol))
    given = forcing_from(b, a, _swapped(alignment)) if live_side == "a" else forcing_from(a, b, alignment)
    with stage(progress, f"replay {live.source}"):
        local = InMemory(replay(live, feed, given), live.source)
    return compare_isolated(
        a, b, local, local_side=live_side, alignment=alignment, links=links if live_side == "b" else None, rtol=rtol,
        progress=progress, failures=failures,
    )


def forcing_from(a: Recording, b: Recording, alignment: Alignment) -> Forcing:
    """A's recorded outputs and output gradients, keyed by the names of B's aligned layers; each read from ``a``
    when the replay reaches its layer, so that memory does not grow with the model. A layer whose values a
    stats-only dump did not keep is not forced, nor is the loss (nothing comes after it)."""
    tables: dict[str, dict[str, Callable[[], list[np.ndarray]]]] = {"output": {}, "grad_output": {}}
    for i, j in alignment.pairs:
        la, lb = a.layers[i], b.layers[j]
        if lb.name == "loss" and j == len(b.layers) - 1:
            continue
        for kind, table in tables.items():
            keys_a, keys_b = keys_of(la.tensors, kind), keys_of(lb.tensors, kind)
            # Alike but for axes of length 1 will do: nn.LSTM's h is (1, N, H) where a hand-written cell's is (N, H).
            alike = all(squeezed(la.tensors[x].shape) == squeezed(lb.tensors[y].shape) and la.tensors[x].stored for x, y in zip(keys_a, keys_b))
            # A side may return fewer values than the other (a hand-written RNN its outputs, nn.RNN also h_n): the
            # first ones, which both have, are forced.
            if keys_a and len(keys_a) <= len(keys_b) and alike:
                table[lb.name] = partial(_read, a, i, keys_a)
    return Forcing(Lazy(tables["output"]), Lazy(tables["grad_output"]))


def _read(recording: Recording, index: int, keys: list[str]) -> list[np.ndarray]:
    return [recording.tensor(index, k) for k in keys]


def _swapped(alignment: Alignment) -> Alignment:
    return Alignment([(j, i) for i, j in alignment.pairs], alignment.only_b, alignment.only_a, alignment.fused_b, alignment.fused_a)


def replay(live: Side, feed: Feed, forcing: Forcing) -> Trace:
    """The live side's local trace: the same run, teacher-forced, and proven to be.

    Raises:
        AdapterError: a forced layer whose forced values the adapter did not read, or did not note as handed out,
            or whose next layer received the layer's own output instead of the forced one.
    """
    outputs, grads = _Witness(forcing.outputs), _Witness(forcing.grad_outputs)
    try:
        trace = live.run(feed, Forcing(outputs, grads))
    except Raised as raised:  # its backward raised again: what it recorded up to there is its local result
        trace = raised.trace
    unfinished = set(trace.failure.unfinished if trace.failure is not None else ())
    for kind, witness in (("output", outputs), ("grad_output", grads)):
        for r in trace.layers:
            floating = [k for k in keys_of(r.tensors, kind) if np.issubdtype(r.tensors[k].dtype, np.inexact)]
            if r.name not in witness or not floating or (kind == "grad_output" and r.name in unfinished):
                continue
            if kind not in trace.forced.get(r.name, set()) or r.name not in witness.seen:
                _refuse(live, r.name, f"it did not take the forced {kind.replace('_', ' ')} for it")
    for k, r in enumerate(trace.layers):
        if r.name in outputs.seen and received(trace, k, outputs.seen[r.name]) is False:
            _refuse(live, r.name, "the layer after it received the layer's own output, not the forced one")
    return trace


def _refuse(live: Side, layer: str, why: str) -> None:
    raise AdapterError(
        f"The {live.adapter.name} adapter did not force layer '{layer}' of {live.source} in the replay ({why}), so no "
        "culprit can be named from it. The adapter must honour Forcing (layerdiff.testing.FakeAdapter shows how)."
    )


@dataclass(frozen=True)
class Sample:
    """A few entries of a forced value, at flat positions ``at``, in PyTorch's order: what the next layer must
    have received."""

    shape: tuple[int, ...]
    at: np.ndarray
    values: np.ndarray

    @staticmethod
    def of(value: np.ndarray, at: np.ndarray | None = None) -> Sample:
        """``value`` sampled at ``at``, by default at ``WITNESSES`` positions spread over it."""
        value = np.asarray(value)
        if at is None:
            at = np.unique(np.linspace(0, max(value.size - 1, 0), min(WITNESSES, value.size)).astype(np.int64))
        return Sample(tuple(value.shape), at, value.reshape(-1)[at].astype(np.float64))

    @staticmethod
    def at_index(value: np.ndarray, index: int) -> Sample:
        """``value`` sampled at one flat position: a value moved there alone (a finite difference)."""
        return Sample.of(value, np.array([index]))


class _Witness(Mapping[str, list[np.ndarray]]):
    """A forcing table that keeps a sample of the first value of each layer as the adapter reads it."""

    def __init__(self, table: Mapping[str, list[np.ndarray]]) -> None:
        self.table = table
        self.seen: dict[str, Sample] = {}

    def __getitem__(self, name: str) -> list[np.ndarray]:
        values = self.table[name]
        if values:
            self.seen[name] = Sample.of(values[0])
        return values

    def __contains__(self, name: object) -> bool:
        return name in self.table

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


def received(trace: Trace, index: int, forced: Sample, window: int = 8) -> bool | None:
    """Whether the layers after layer ``index`` of a replay received its forced output: True when the input of one
    of the next ``window`` layers holds the forced values, False when it holds the layer's own output instead (and
    that differs from the forced one), None when no later input holds either (no recorded consumer)."""
    record = trace.layers[index]
    if "output" not in record.tensors:
        return None
    own = _sampled(canonical(record.tensors["output"], record.layouts.get("output", "")), forced)
    if own is None:
        return None
    for later in trace.layers[index + 1 : index + 1 + window]:
        for key in keys_of(later.tensors, "input"):
            got = _sampled(canonical(later.tensors[key], later.layouts.get(key, "")), forced)
            if got is None:
                continue
            # A bfloat16 side's values are recorded in float32: its own spacing is what rounding may move them by.
            dtype = trace.info.settings.get("framework_dtype", str(later.tensors[key].dtype))
            eps = 8 * EPS.get(dtype, EPS["float32"])
            bound = eps * (np.abs(forced.values) + np.abs(own))
            if np.all(np.abs(got - forced.values) <= bound):
                return True
            if np.all(np.abs(got - own) <= bound) and not np.all(np.abs(own - forced.values) <= bound):
                return False
    return None


def _sampled(value: np.ndarray, sample: Sample) -> np.ndarray | None:
    if tuple(value.shape) != sample.shape:
        return None
    values: np.ndarray = np.asarray(value).reshape(-1)[sample.at].astype(np.float64)
    return values


def compare_isolated(
    a: Recording,
    b: Recording,
    local: Recording,
    *,
    local_side: str = "b",
    alignment: Alignment,
    links: list[WeightLink] | None,
    rtol: float | None = None,
    progress: Progress | None = None,
    failures: tuple[Failure | None, Failure | None] = (None, None),
) -> Comparison:
    """The plain comparison of ``a`` and ``b``, and the local one of the replay ``local`` (of side ``local_side``)
    against the other side, row by row (each row's tensors of side A are read once for both): culprits, and a
    verdict per layer. A layer whose backward raised on either side (``failures``) is a culprit of its own.
    """
    a, b = Reader(spanned(a, alignment.fused_a)), Reader(spanned(b, alignment.fused_b))
    local = spanned(local, alignment.fused_a if local_side == "a" else alignment.fused_b)
    tolerance = tolerance_for(a, b, rtol)
    table, unowned = rows(a, b, alignment, links)
    at = {l.name: l.index for l in local.layers}
    batch = _batch(a)
    layers: list[LayerDiff] = []
    facts: list[blame.Local | None] = []
    for n, row in enumerate(table):
        if progress is not None:
            progress("compare", n, len(table))
        layer = compare_row(a, b, row, tolerance)
        name = (a.layers[row.i] if local_side == "a" else b.layers[row.j]).name
        forced_from = b.layers[row.j] if local_side == "a" else a.layers[row.i]
        fact = None
        # A layer the replay could not force (a stats-only dump kept none of its values) has no local result.
        if name in at and all(t.stored for t in forced_from.tensors.values()):
            side_a, side_b = ((local, at[name]), (b, row.j)) if local_side == "a" else ((a, row.i), (local, at[name]))
            fact = local_row(side_a, side_b, row.links, tolerance, layer, batch)
        _unfinished(fact, layer, failures, a.source, b.source)
        facts.append(fact)
        layers.append(layer)
    if progress is not None:
        progress("compare", len(table), len(table))
    live = [(local, at.get((a.layers[r.i] if local_side == "a" else b.layers[r.j]).name)) for r in table]
    other: list[tuple[Recording, int]] = [(b, r.j) if local_side == "a" else (a, r.i) for r in table]
    values = Flow(partial(gap_before, a, b, alignment), partial(consumers, live, other), partial(made_by_code, live, other), len(table))
    placed = blame.place(facts, layers, values)
    for layer in layers:
        judged = set(layer.judged.values())
        layer.verdict = "culprit" if "culprit" in judged else ("ok" if layer.ok else "inherited")
    culprits = placed.culprits()
    return assemble(a, b, alignment, layers + loose(a, b, unowned, tolerance, "inherited"), culprits, rtol, failures)


def _unfinished(fact: blame.Local | None, layer: LayerDiff, failures: tuple[Failure | None, Failure | None], *sources: str) -> None:
    """A layer whose backward never ran on one side (it raised there, or in a layer after it) has no gradients to
    judge there: the one that raised is said, with its exception, and none is missing a gradient."""
    for failure, name, source in zip(failures, (layer.layer_a, layer.layer_b), sources):
        if failure is None or name.split("+")[0] not in failure.unfinished and name not in failure.unfinished:
            continue
        layer.param_grads = [t for t in layer.param_grads if t.problem != "missing gradient"]
        layer.local = [t for t in layer.local if t.problem != "missing gradient"]
        if fact is not None:
            fact.grad_input = fact.grad_output = None
            fact.params = []
            fact.raised = f"raised in {source}: {failure.message}" if failure.layer in (name, *name.split("+")) else ""
            fact.unfinished = True
        if fact is None or not fact.raised:
            layer.notes.append(f"its backward never ran in {source}: {failure.layer} raised before it")


def local_row(
    a: tuple[Recording, int],
    b: tuple[Recording, int],
    links: list[WeightLink],
    tolerance: Tolerance,
    layer: LayerDiff,
    batch: int | None,
) -> blame.Local:
    """What the replay says of one layer: one side's replayed result against the other side's recorded one (each
    local error of its own appended to ``layer.local``), the first wrong tensor of each kind as a culprit."""
    (ra, i), (rb, k) = a, b
    la, lb = ra.layers[i], rb.layers[k]
    both = {kind: bool(keys_of(la.tensors, kind) and keys_of(lb.tensors, kind)) for kind in ("grad_input", "grad_output")}
    fact = blame.Local(has_grad_input=both["grad_input"], grad_forced=_alike(la, lb, "grad_output"), output_forced=_alike(la, lb, "output"))
    own = ("output", "grad_input" if both["grad_input"] else "grad_output")
    for kind in ("input", "output", "grad_input", "grad_output"):
        for key in keys_of(la.tensors, kind):
            if key not in lb.tensors:
                continue
            d = pair(key, ra, i, rb, k, tolerance.of(la, key))
            if kind in own:
                layer.local.append(d)
            if d.ok:
                continue
            pass_: Pass = "forward" if kind in ("input", "output") else "backward"
            values = None if d.problem == "stats" else (ra.tensor(i, key), rb.tensor(k, key))
            named = f"{key} of {layer.layer_a}" if kind == "input" else key
            setattr(fact, {"input": "received"}.get(kind, kind), _culprit(layer, pass_, key, d, values, ra.source, rb.source, batch, named))
            if kind == "input":
                fact.layout_only = values is not None and permuted_equal(*values, d.tol)
            break
    for link in links:
        if ra.param_info(link.src) is None and rb.param_info(link.dst) is None:
            continue
        d = param_diff(ra, rb, link, tolerance.of(la, "param"), grad_floor(la, int(np.prod(link.src_shape))))
        layer.local.append(d)
        if not d.ok and not fact.params:
            values = None if d.problem in ("stats", "shape", "missing gradient") else (link.view(grad(ra, link.src)), grad(rb, link.dst))
            fact.params.append(_culprit(layer, "param_grad", f"grad of {link.src}", d, values, ra.source, rb.source, batch))
    return fact


def _alike(la: LayerInfo, lb: LayerInfo, kind: str) -> bool:
    """Whether a value of this kind could be forced from one side into the other: the same shapes (or none)."""
    keys_a, keys_b = keys_of(la.tensors, kind), keys_of(lb.tensors, kind)
    if not keys_a or not keys_b:
        return True
    return len(keys_a) == len(keys_b) and all(la.tensors[x].shape == lb.tensors[y].shape for x, y in zip(keys_a, keys_b))


def _culprit(
    layer: LayerDiff,
    pass_: Pass,
    key: str,
    d: TensorDiff,
    values: tuple[np.ndarray, np.ndarray] | None,
    src_a: str,
    src_b: str,
    batch: int | None,
    tensor: str | None = None,
) -> Culprit:
    """A culprit, with a hint from its values (none when only statistics were kept); ``tensor`` names what
    differs where its key does not say it (``input of fc2``)."""
    tensor = tensor or key
    note = d.note or (f"{tensor} has shape {d.shape_a} in {src_a}, {d.shape_b} in {src_b}" if d.problem == "shape" else "")
    if values is None or d.problem == "shape":
        return Culprit(layer.layer_a, layer.layer_b, pass_, tensor, d.max_abs, d.max_rel, d.tol, None, note=note, problem=d.problem)
    va, vb = values
    what = key.replace("grad of ", "gradient of ").replace("grad_input", "input gradient").replace("grad_output", "output gradient")
    spatial = () if pass_ == "param_grad" else (2,) if va.ndim == 3 and {layer.kind_a, layer.kind_b} & ONE_D else None
    sides = Sides(f"{src_a}'s {layer.layer_a} {what}", f"{src_b}'s", batch, spatial)
    hint = describe(va, vb.reshape(va.shape) if vb.size == va.size else vb, sides, d.tol)
    return Culprit(layer.layer_a, layer.layer_b, pass_, tensor, d.max_abs, d.max_rel, d.tol, hint, (va, vb))


def _batch(a: Recording) -> int | None:
    first = next((l for l in a.layers if "input" in l.tensors), None)
    shape = first.tensors["input"].shape if first is not None else ()
    return int(shape[0]) if shape else None
