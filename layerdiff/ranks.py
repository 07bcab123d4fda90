"""Putting a sharded run back together: the dumps one per rank that ``layerdiff.record`` writes under ``torchrun``,
made into the one recording a single process would have made, so that it can be compared with a reference.

Each tensor is reassembled by its placement: where the rank's recording says it (a ``DTensor``'s, a declared one,
a data-parallel batch shard), else from the shapes against the reference's: the same on every rank is replicated,
a slice of the reference's shape is a shard on the axis whose sizes add up. In data parallel each rank's loss is
the mean over its own slice of the batch, so the gradients of its activations are ``world_size`` times those of
one process on the whole batch: they are scaled back, as DDP's averaging of the parameter gradients does.

Where a reassembled tensor does not match the reference, the ranks are looked at one by one to say why: a factor of
the world size (summed, not averaged, over the ranks), a tensor that should be the same on every rank and is not
but whose sum over the ranks is right (a missing all-reduce), a rank whose shard differs.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from layerdiff.errors import AlignmentError, DumpError
from layerdiff.progress import Progress
from layerdiff.records import LayerRecord, Trace, keys_of
from layerdiff.results import Comparison
from layerdiff.runner import RECORDED, weights_hash
from layerdiff.stats import digest
from layerdiff.sync import WeightLink

SHARD = re.compile(r"shard\((-?\d+)\)")
SAME = 1e-12  # relative: values computed alike on every rank are the same to rounding


@dataclass
class Ranks:
    """The recordings of one iteration, one per rank, in rank order."""

    traces: list[Trace]
    sources: list[str]
    findings: dict[tuple[str, str], str] = field(default_factory=dict)  # (layer or parameter, tensor) -> why

    @property
    def world(self) -> int:
        return len(self.traces)

    @property
    def data_parallel(self) -> bool:
        """Each rank ran its own slice of the batch (DDP): what its recording's placements say."""
        return any(v == "shard(0)" for r in self.traces[0].layers for v in r.placements.values())


def expand(path: str | os.PathLike[str]) -> list[Path] | None:
    """The rank dumps a path names: a glob (``step.rank*.h5``), or ``step.h5`` when only ``step.rank0.h5``… exist.
    None when the path is no set of rank dumps."""
    text = str(path)
    if any(c in text for c in "*?["):
        found = sorted(Path(text).parent.glob(Path(text).name), key=_rank_of)
        if not found:
            raise DumpError(f"{text} matches no file. Give the dumps of every rank, e.g. 'step.rank*.h5'.")
        return found
    p = Path(text)
    if p.exists():
        return None
    found = sorted(p.parent.glob(f"{p.stem}.rank*{p.suffix}"), key=_rank_of)
    return found or None


def _rank_of(p: Path) -> int:
    m = re.search(r"\.rank(\d+)\.", p.name)
    return int(m.group(1)) if m else -1


def check(ranks: Ranks) -> None:
    """Refuse a set that is not one whole run: ranks missing, or dumps of different runs."""
    worlds = {t.info.world_size for t in ranks.traces}
    got = sorted(t.info.rank for t in ranks.traces)
    if len(worlds) != 1 or got != list(range(ranks.world)) or worlds != {ranks.world}:
        raise DumpError(
            f"{', '.join(ranks.sources)} are not the dumps of every rank of one run (ranks {got}, world sizes "
            f"{sorted(worlds)}). Give all of them, e.g. 'step.rank*.h5'."
        )


def feed(ranks: Ranks, shapes: dict[str, tuple[int, ...]]) -> Trace:
    """The weights, inputs and upstream gradient of the whole run: what a single-process reference runs on.

    ``shapes``: the reference's parameter shapes by name, which say how a shard without a placement fits.
    """
    first = ranks.traces[0]
    params = []
    for n, p in enumerate(first.params):
        shards = [t.params[n] for t in ranks.traces]
        whole = shapes.get(p.name)
        value = _assemble(p.name, "value", [s.value for s in shards], p.placement, whole, ranks)
        grad = None if p.grad is None else _assemble(p.name, "grad", [s.grad for s in shards], p.placement, whole, ranks)  # type: ignore[misc]
        params.append(replace(p, value=value, grad=grad, placement=""))
    inputs = [_whole(ranks, "input", [t.inputs[i] for t in ranks.traces], 1.0) for i in range(len(first.inputs))]
    upstream = [_whole(ranks, "upstream gradient", [t.upstream[i] for t in ranks.traces], 1.0 / ranks.world)
                for i in range(len(first.upstream))]
    info = replace(
        first.info, rank=0, world_size=1, settings={**first.info.settings, "assembled_from": f"{ranks.world} ranks"},
        weights_sha256=weights_hash(params), inputs_sha256=digest(inputs), upstream_sha256=RECORDED + digest(upstream),
    )
    return Trace([], params, None, info, inputs, None, upstream)


def layers(ranks: Ranks, reference: Trace) -> list[LayerRecord]:
    """Every layer of the run, each tensor reassembled to the reference's shape where the reference records it."""
    at = {r.name: r for r in reference.layers}
    scale = 1.0 / ranks.world if ranks.data_parallel else 1.0
    out = []
    for n, r in enumerate(ranks.traces[0].layers):
        calls = [t.layers[n] for t in ranks.traces]
        if any(c.name != r.name for c in calls):
            raise AlignmentError(f"The ranks recorded different layers at call {n}: {', '.join(c.name for c in calls)}.")
        ref = at.get(r.name)
        whole = LayerRecord(r.name, r.kind, {}, list(r.params))
        for key in r.tensors:
            shape = tuple(ref.tensors[key].shape) if ref is not None and key in ref.tensors else None
            value = _assemble(r.name, key, [c.tensors[key] for c in calls], r.placements.get(key, ""), shape, ranks)
            if key.startswith("grad") and r.placements.get(key) == "shard(0)":
                value = value * scale
            whole.tensors[key] = value
        out.append(whole)
    return out


def _assemble(
    name: str, key: str, shards: list[np.ndarray], placement: str, whole: tuple[int, ...] | None, ranks: Ranks
) -> np.ndarray:
    """One tensor of the whole run from its shards, by its placement, or from the shapes where none is known."""
    shard = SHARD.fullmatch(placement)
    if shard is not None:
        return np.concatenate(shards, axis=int(shard.group(1)))
    if placement == "partial":
        return np.asarray(np.sum(shards, axis=0))
    if not _differ(shards) or placement == "replicate":
        if _differ(shards):
            ranks.findings[name, key] = _unequal(name, key, shards)
        return shards[0]
    axis = _axis(shards, whole)
    if axis is None:
        if whole is None or tuple(shards[0].shape) == tuple(whole):
            ranks.findings[name, key] = _unequal(name, key, shards)
            return shards[0]
        raise AlignmentError(
            f"Cannot put {name} {key} back together: its shards {[s.shape for s in shards]} do not make "
            f"{whole}. Say how it is split with record(..., placements={{'{name}': 'shard(0)'}})."
        )
    return np.concatenate(shards, axis=axis)


def _axis(shards: list[np.ndarray], whole: tuple[int, ...] | None) -> int | None:
    """The axis along which the shards add up to ``whole``."""
    if whole is None or len(whole) != shards[0].ndim:
        return None
    for axis in range(shards[0].ndim):
        others = all(s.shape[:axis] + s.shape[axis + 1 :] == whole[:axis] + whole[axis + 1 :] for s in shards)
        if others and sum(s.shape[axis] for s in shards) == whole[axis] and shards[0].shape[axis] != whole[axis]:
            return axis
    return None


def _whole(ranks: Ranks, what: str, values: list[np.ndarray], scale: float) -> np.ndarray:
    """An input (or the upstream gradient, ``scale`` the share of one rank's loss in the whole run's) of the whole
    run: in data parallel each rank's slice of the batch, else the same on every rank (rank 0's, said when not)."""
    if ranks.data_parallel:
        return np.concatenate(values, axis=0) * scale
    if _differ(values):
        ranks.findings["model", what] = f"the model's {what} should be the same on every rank and is not: rank 0's is used"
    return values[0]


def _differ(values: list[np.ndarray]) -> bool:
    first = np.asarray(values[0], dtype=np.float64)
    scale = float(np.abs(first).max(initial=0.0))
    return any(v.shape != first.shape or not np.allclose(v, first, rtol=SAME, atol=SAME * scale) for v in values[1:])


def _unequal(name: str, key: str, shards: list[np.ndarray]) -> str:
    return f"{name} {key} should be the same on every rank and is not ({len(shards)} ranks)"


def explain(ranks: Ranks, whole: Trace, reference: Trace) -> None:
    """Why a reassembled tensor differs from the reference's, rank by rank, added to ``ranks.findings``."""
    at = {r.name: r for r in reference.layers}
    for n, r in enumerate(whole.layers):
        ref = at.get(r.name)
        if ref is None:
            continue
        for key in keys_of(r.tensors, "output") + keys_of(r.tensors, "grad_input"):
            if key in ref.tensors and ref.tensors[key].shape == r.tensors[key].shape and not _close(r.tensors[key], ref.tensors[key]):
                why = _why([t.layers[n].tensors[key] for t in ranks.traces], ref.tensors[key], ranks.world)
                if why:
                    ranks.findings[r.name, key] = f"{r.name}'s {key.replace('_', ' ')} {why}"
    by_name = {p.name: p for p in reference.params}
    for n, p in enumerate(whole.params):
        ref_p = by_name.get(p.name)
        if p.grad is None or ref_p is None or ref_p.grad is None or p.grad.shape != ref_p.grad.shape:
            continue
        factor = _factor(p.grad, ref_p.grad)
        if factor is not None and math.isclose(factor, ranks.world, rel_tol=1e-6):
            ranks.findings[p.layer, f"grad of {p.name}"] = (
                f"{p.name}'s gradient is {ranks.world} × the reference's, the world size: the gradients are summed over "
                "the ranks, not averaged (a communication hook or a division left out)"
            )


def _why(shards: list[np.ndarray], reference: np.ndarray, world: int) -> str | None:
    if all(s.shape == reference.shape for s in shards) and _differ(shards) and _partial_sums(shards, reference):
        return (f"differs between the {world} ranks where it should be the same, and its sum over them is right (but "
                "for a term every rank adds, a bias): each rank holds a partial sum, an all-reduce is missing")
    axis = _axis(shards, reference.shape)
    if axis is None:
        return None
    bounds = np.cumsum([0] + [s.shape[axis] for s in shards])
    wrong = [k for k, s in enumerate(shards) if not _close(s, np.take(reference, range(bounds[k], bounds[k + 1]), axis=axis))]
    if 0 < len(wrong) < world:
        return f"differs on rank {', '.join(map(str, wrong))} only: that rank's shard is wrong"
    return None


def _partial_sums(shards: list[np.ndarray], reference: np.ndarray) -> bool:
    """Whether the ranks' values add up to the reference, but for a term along the last axis that every rank added
    (a bias added before the missing reduction)."""
    rest = reference - np.sum(shards, axis=0)
    if rest.ndim == 0:
        return _close(rest, np.zeros_like(rest))
    term = rest.reshape(-1, rest.shape[-1]).mean(axis=0)
    return _close(np.sum(shards, axis=0) + term, reference)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    scale = float(np.sqrt(np.mean(np.square(b, dtype=np.float64)))) if b.size else 0.0
    return bool(np.allclose(a, b, rtol=1e-6, atol=1e-6 * scale))


def _factor(a: np.ndarray, b: np.ndarray) -> float | None:
    bb = float(np.vdot(b, b))
    if bb == 0:
        return None
    c = float(np.vdot(a, b)) / bb
    return c if _close(a, c * b) else None


def load(paths: list[Path]) -> Ranks:
    """The rank dumps, read whole (each is one rank's share of one iteration)."""
    from layerdiff import store

    traces = []
    for p in paths:
        with store.Dump(p) as d:
            traces.append(d.trace())
    ranks = Ranks(traces, [p.name for p in paths])
    check(ranks)
    return ranks


def against(
    paths: list[Path],
    other: Path,
    *,
    rtol: float | None,
    layer_map: dict[str, str] | None,
    param_map: dict[str, str] | None,
    twice: bool,
    progress: Progress | None,
) -> tuple[Comparison, list[WeightLink] | None, str, list[str]]:
    """The rank dumps of a sharded run, put back together, against a single-process reference: a dump (compared as
    recorded), or a model file (run on the whole run's weights and feed, and replayed for culprits).

    Returns:
        The comparison, the weight links and where the weights came from, and notes (what the ranks say).
    """
    from layerdiff import modelfile, runner, store
    from layerdiff.compare import compare
    from layerdiff.isolate import isolated
    from layerdiff.records import InMemory

    ranks = load(paths)
    source = f"{paths[0].name} (+{ranks.world - 1} ranks)"
    if store.is_dump(other):
        with store.Dump(other) as d:
            reference = d.trace()
        whole = feed(ranks, {p.name: tuple(p.value.shape) for p in reference.params})
        whole.layers = layers(ranks, reference)
        explain(ranks, whole, reference)
        found = compare(InMemory(whole, source), InMemory(reference, other.name), layer_map=layer_map, rtol=rtol, progress=progress)
        return found, None, source, _notes(ranks)
    model = modelfile.load(other)
    shapes = {p.name: tuple(p.value.shape) for p in runner.prepare(model, "native").parameters()}
    whole = feed(ranks, shapes)
    pair = runner.run_against(whole, source, modelfile.load(other), param_map, twice=twice, progress=progress)
    whole.layers = layers(ranks, pair.b)
    explain(ranks, whole, pair.b)
    found = isolated(InMemory(whole, source), InMemory(pair.b, model.source), pair.live, pair.feed, links=pair.links,
                     layer_map=layer_map, rtol=rtol, progress=progress)
    if found.culprits is not None:
        found.culprits = [replace(c, hint=ranks.findings.get((c.layer_a, c.tensor), c.hint)) for c in found.culprits]
        if ("model", "upstream gradient") in ranks.findings:
            # Each rank's backward ran on its own output gradient: put together, they answer no single upstream.
            found.culprits = [c for c in found.culprits if c.pass_ == "forward"]
            found.structure.append("the ranks received different output gradients (their outputs differ): the "
                                   "backward pass is not judged; fix the forward culprit first")
    return found, pair.links, source, pair.notes + _notes(ranks)


def _notes(ranks: Ranks) -> list[str]:
    kind = "data parallel: each rank's slice of the batch" if ranks.data_parallel else "sharded tensors"
    return [f"{ranks.world} ranks put back together ({kind})"] + [f"ranks: {why}" for why in ranks.findings.values()]
