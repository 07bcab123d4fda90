"""Each side's float64 twin, for ``--dtype native``: its rounding told apart from its code.

A side that computes below float64 (float32, float16, bfloat16, float32 with TF32 matrix products) runs again in
float64, as its twin: a copy of its model as its file built it, on the same weights and feed. The verdict on the code
compares the two twins, plainly and replayed, exactly as ``--dtype float64`` compares two sides: a bug is found at
float64's noise floor whatever precision the side runs in, and rounding is never taken for one. Each rounded side is
then judged against its own twin (``precision``): the twin replays forced with the side's values, so that each of
its layers computes in float64 on what the side's layer received, and a layer that loses more than its precision
explains is named.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

from layerdiff import contradiction, modelfile, precision, runner, sync
from layerdiff.align import align
from layerdiff.errors import ModelFileError, term
from layerdiff.isolate import forcing_from, isolated, replay
from layerdiff.modelfile import Model
from layerdiff.progress import Progress, stage
from layerdiff.records import InMemory, Recording, Trace
from layerdiff.results import Comparison, Culprit, ParamCheck, Precision
from layerdiff.weights import describe, equal_links


@dataclass
class Twins:
    a: Trace | None  # A's twin's plain run; None where A computed in float64 and is its own twin
    b: Trace | None
    live: runner.Side  # B's twin (B where it computed in float64): what the replay forces with A's values
    precision: list[Precision]  # each side that computed below float64, against its twin


def run_pair(
    a: Model,
    b: Model,
    dtype: str = "float64",
    seed: int = 0,
    param_map: dict[str, str] | None = None,
    twice: bool = True,
    progress: Progress | None = None,
    layers: list[str] | None = None,
    weights: str = "a",
    spill: tuple[runner.Spill, runner.Spill] | None = None,
) -> runner.Pair:
    """``runner.run_pair``; with ``dtype="native"``, each side that computed below float64 runs again as its float64
    twin, and is judged against it (``Pair.twins``). The twins are judged against the sides' traces in memory: a
    ``spill`` is taken only in float64.

    Raises:
        ModelFileError: a side that computed below float64 whose model can be neither copied nor loaded again.
    """
    # Copied before either side runs: what the file built, not what the run left behind.
    copies = [_copy(m) for m in (a, b)] if dtype == "native" else []
    pair = runner.run_pair(a, b, dtype, seed, param_map, twice, progress, layers, weights, spill if dtype == "float64" else None)
    rounded = [runner.compute_dtype(t) != "float64" for t in (pair.a, pair.b)]
    if copies and any(rounded):
        pair.twins = _twins(pair, copies, rounded, seed, twice, progress, layers)
    return pair


def _copy(model: Model) -> Model | None:
    """The model as its file built it: a deep copy (its loss too, which a float64 run casts in place), or, for an
    object that cannot be copied, its file run again."""
    try:
        return replace(model, obj=copy.deepcopy(model.obj), spec=replace(model.spec, loss=copy.deepcopy(model.spec.loss)))
    except Exception:
        return modelfile.load(model.path) if model.path is not None else None


def _twins(
    pair: runner.Pair,
    copies: list[Model | None],
    rounded: list[bool],
    seed: int,
    twice: bool,
    progress: Progress | None,
    layers: list[str] | None,
) -> Twins:
    """Each rounded side's twin, on the weights the side was given (A's own; B's copied from A's, or its own), run
    plainly and then forced with the side's values; a side in float64 is its own twin."""
    carried = pair.links if pair.weights is None else equal_links(pair.links, pair.weights)
    given = [{p.name: p.value for p in pair.a.params}, sync.carry(carried, pair.a.params)]
    hashes = [runner.weights_hash(pair.a.params), None if pair.weights is not None else runner.weights_hash(pair.a.params)]
    traces: list[Trace | None] = [None, None]
    lives, judged = [pair.live, pair.live], []
    for n, (model, trace) in enumerate(zip(copies, (pair.a, pair.b))):
        if not rounded[n]:
            continue
        if model is None:
            name = Path(trace.info.script).name if trace.info.script else "A model"
            raise ModelFileError(
                f"{name} computes in {trace.info.compute_dtype}, and {term('dtype', 'native', repr('native'))} judges it "
                "against a float64 rerun of it, but its model can be neither copied nor loaded again. Compare in float64 "
                "(the default), or make the model copyable (copy.deepcopy)."
            )
        twin = runner.prepare(model, "float64")
        twin.load(given[n])
        with stage(progress, f"capture {model.source} in float64"):
            # Recorded as asked ("native"), as its side is: the comparison of the twins finds no difference of form.
            traces[n] = made = runner.capture(twin, pair.feed, "native", seed, hashes[n], twice, layers)
        own, plain = InMemory(trace, model.source), InMemory(made, model.source)
        with stage(progress, f"replay {model.source} in float64"):
            local = replay(twin, pair.feed, forcing_from(own, plain, align(own, plain)))
        judged.append(precision.judge("ab"[n], own, plain, InMemory(local, model.source)))
        lives[n] = twin
    return Twins(traces[0], traces[1], lives[1], judged)


def compared(
    a: Recording,
    b: Recording,
    pair: runner.Pair,
    layer_map: dict[str, str] | None,
    rtol: float | None,
    progress: Progress | None,
    live_side: str = "b",
) -> Comparison:
    """The comparison, with culprits, of a pair's two recordings (its dumps, or its traces in memory): the live side
    replayed forced with the other's values. With twins, the twins are compared so, and each rounded side's precision
    stands beside them; with each side's own weights, their check, and the culprits that hold a differing one say so.
    """
    twins = pair.twins
    failures = (pair.a.failure, pair.b.failure) if live_side == "b" else (pair.b.failure, pair.a.failure)
    if twins is None:
        precision.refuse_unjudged(a.info, b.info, rtol, a.source, b.source)
        result = isolated(
            a, b, pair.live, pair.feed, links=pair.links, layer_map=layer_map, rtol=rtol, live_side=live_side,
            progress=progress, failures=failures,
        )
        if live_side == "b":
            contradiction.check(result, a, b, pair.live, pair.feed, pair.links, layer_map, rtol)
    else:
        # A side that computed in float64 is its own twin: read from its recording (a dump, in ``run``).
        ta = a if twins.a is None else InMemory(twins.a, a.source)
        tb = b if twins.b is None else InMemory(twins.b, b.source)
        found = isolated(ta, tb, twins.live, pair.feed, links=pair.links, layer_map=layer_map, rtol=rtol, progress=progress,
                         failures=failures)
        judged = [precision.with_excess(p, found) for p in twins.precision]
        result = replace(found, info_a=a.info, info_b=b.info, loss_a=a.loss, loss_b=b.loss, precision=judged)
    if pair.weights is None:
        return result
    # Each side's own weights hash differently by design: the check says how they differ.
    structure = [line for line in result.structure if not line.startswith("weights_sha256")]
    return replace(result, weights=pair.weights, culprits=_weight_hints(result.culprits, pair, a, b), structure=structure)


def _weight_hints(culprits: list[Culprit] | None, pair: runner.Pair, a: Recording, b: Recording) -> list[Culprit] | None:
    """Culprits whose layer holds a parameter that differs between the sides, told so first in their hint."""
    check = pair.weights
    assert check is not None
    bad = [p for p in check.params if not p.ok]
    if culprits is None or not bad:
        return culprits
    owner: dict[tuple[str, str], list[ParamCheck]] = {}
    for recording in (a, b):
        names = set(recording.param_names())
        for p in bad:
            name = p.a if recording.source == check.source_a else p.b
            if name in names:
                owner.setdefault((recording.source, recording.spec(name).layer), []).append(p)
    found = []
    for c in culprits:
        held = owner.get((a.source, c.layer_a)) or owner.get((b.source, c.layer_b))
        if held:
            more = f", and {len(held) - 1} more of its weights (above)" if len(held) > 1 else ""
            c = replace(c, hint=f"Its weights differ: {describe(held[0], check)}{more}." + (f" {c.hint}" if c.hint else ""))
        found.append(c)
    return found
