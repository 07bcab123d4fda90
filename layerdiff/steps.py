"""Training steps: K iterations of both sides, each with its own optimizer, compared step by step.

**Re-synced** (the default): before each step after the first, side B is given side A's weights, optimizer state
and buffers, so that each step stands alone, as teacher forcing makes each layer stand alone. Within a step, the
layers are compared and replayed as in a one-iteration run; then both optimizers are given A's gradients, so that
an update that differs is the optimizer's own (``updates``); B's buffers are read after its replay, so that one
that differs is its layer's own update of it. The run stops at the first step that parts: its culprit is a layer,
the optimizer, or a buffer update.

**Free-running**: each side trains on its own, and the comparison names the first step whose layers part (a
buffer that differs while the layers agree parts a step too), and how far apart the two are at every step.

Every run of a step starts from the buffers the step started with (the run-to-run check at step 1 and the replay
run the model again), and the step keeps what its first run left. Each step is written to the dumps and dropped,
so that memory does not grow with K.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from layerdiff import files, optimizer, runner, step_store, sync
from layerdiff.adapter import Feed, Forcing
from layerdiff.compare import compare
from layerdiff.errors import AlignmentError, DumpError, ModelFileError, term
from layerdiff.isolate import isolated
from layerdiff.layout import canonical
from layerdiff.modelfile import Model
from layerdiff.optimizer import Buffer, Stepper
from layerdiff.precision import HALF
from layerdiff.progress import Progress, stage
from layerdiff.records import InMemory, Trace, select
from layerdiff.results import Comparison, TensorDiff
from layerdiff.step_results import Mode, StepDiff, Training
from layerdiff.metrics import diff, noise_floor
from layerdiff.updates import TERMS, Found, Stepped, carried_state, compare_step, pair_buffers


# Free-running, how far apart (max rel) two sides may drift once their weights differ, and still be called the same:
# an optimizer that normalizes its step (Adam) turns a gradient that is rounding noise (a bias before a batch norm)
# into steps of 1e-12 .. 1e-10 of the weights; a difference that matters to a user is orders of magnitude above.
DRIFT = 1e-6


@dataclass
class StepSide(runner.Side):
    """A side whose runs within one step all start from the buffers the step started with; each run's buffers
    after it are kept (``afters``: the first run's, then the replay's)."""

    start: dict[str, Buffer] = field(default_factory=dict)
    afters: list[dict[str, Buffer]] = field(default_factory=list)

    def begin(self) -> None:
        self.start, self.afters = optimizer.buffers(self), []

    def run(self, feed: Feed, forcing: Forcing | None = None) -> Trace:
        if self.afters:
            self._restore(self.start)
        trace = super().run(feed, forcing)
        self.afters.append(optimizer.buffers(self))
        return trace

    def settle(self) -> None:
        """Keep what the step's first run left in the buffers."""
        if self.afters:
            self._restore(self.afters[0])

    def _restore(self, buffers: dict[str, Buffer]) -> None:
        made = {name: None for name in (self.afters[-1] if self.afters else {}) if name not in buffers}
        optimizer.load_buffers(self, {**made, **{n: b.value for n, b in buffers.items()}})


@dataclass
class Options:
    steps: int = 1
    free_running: bool = False
    dtype: str = "float64"
    seed: int = 0
    lr: float = 0.01
    param_map: dict[str, str] | None = None
    layer_map: dict[str, str] | None = None
    rtol: float | None = None
    once: bool = False
    layers: list[str] | None = None
    stats_only: bool = False
    skip_copied_weights: bool = False
    compression: str | None = None


@dataclass
class Run:
    """What ``train`` found, with what the report says beside it."""

    training: Training
    links: list[sync.WeightLink]
    weights_from: str
    notes: list[str]


def check_steps(steps: int, weights: str = "a") -> None:
    """Raises ModelFileError for fewer than one step, or for each side's own weights (``weights="own"``): both sides
    train from A's weights, and with their own they would part at step 1 by design."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ModelFileError(f"{term('steps')} must be a whole number of at least 1, not {steps!r}.")
    if weights != "a":
        raise ModelFileError(
            f"{term('weights', 'own', repr('own'))} compares one iteration on each side's own weights, and "
            f"{term('steps')} trains both from the first file's: check the weights without {term('steps')} first."
        )


def _check_precision(trace: Trace, source: str) -> None:
    """Raises ModelFileError for a side in float16 or bfloat16: there an update (lr times a gradient) is mostly
    below the spacing of the weight it moves, and a step has no float64 rerun to tell that rounding from a bug."""
    dtype = runner.compute_dtype(trace)
    if dtype in HALF:
        raise ModelFileError(
            f"{source} computes in {dtype}, where a training step's update is mostly rounding, and {term('steps')} "
            f"has no float64 rerun to tell it from a bug. Train in float64 (the default) or float32, or compare one "
            f"iteration with {term('dtype', 'native', repr('native'))}."
        )


def train(a: Model, b: Model, options: Options, paths: tuple[Path, Path] | None = None, force: bool = False,
          progress: Progress | None = None) -> Run:
    """Train both models ``options.steps`` steps, re-synced or free-running, comparing each step; write each step
    to the dumps ``paths`` when given.

    Raises:
        ModelFileError: fewer than one step, an optimizer the side's adapter cannot step (or not over the model's
            parameters), randomness left on, a side in float16 or bfloat16.
        AlignmentError: parameters, layers, buffers or optimizer state that cannot be mapped between the sides.
    """
    check_steps(options.steps)
    sa, sb = (_side(m, options.dtype) for m in (a, b))
    base, notes = runner.make_feed([sa, sb], options.seed)
    src, links = runner.weight_links(sa, sb, param_map=options.param_map)
    sb.load(sync.carry(links, src))
    del src
    steppers = (optimizer.stepper_for(sa, options.lr), optimizer.stepper_for(sb, options.lr))
    mode: Mode = "free-running" if options.free_running else "re-synced"
    described = (optimizer.describe(steppers[0]), optimizer.describe(steppers[1]))
    training = Training(a.source, b.source, mode, options.steps, [], described[0], described[1])
    declared = any(s.model.inputs is not None for s in (sa, sb))
    notes.append("batches: the declared inputs at every step" if declared else f"batches: seeded anew at each step (seed {options.seed}, step)")
    with _writers(paths, force, options.compression, mode, described) as writers:
        loop = _Loop(sa, sb, steppers, links, options, writers)
        for k in range(1, options.steps + 1):
            with stage(progress, f"step {k} of {options.steps}"):
                found = loop.step(k, base if k == 1 or declared else _seeded(base, options.seed, k))
            training.steps.append(found)
            if found.parted and not options.free_running:
                if k < options.steps:
                    rest = f"step {k + 1}" if k + 1 == options.steps else f"steps {k + 1} to {options.steps}"
                    training.notes.append(f"re-synced steps stop at the first step that parts: {rest} not run")
                break
    training.notes += sorted(set(loop.notes), key=loop.notes.index) + ([loop.drift_note] if loop.drift_note else [])
    return Run(training, links, a.source, notes)


def _side(model: Model, dtype: str) -> StepSide:
    side = runner.prepare(model, dtype)
    return StepSide(side.model, side.handle, side.layout)


def _seeded(base: Feed, seed: int, k: int) -> Feed:
    """Step ``k``'s batch: inputs of the same shapes drawn anew, and a new upstream gradient without a loss."""
    rng = np.random.default_rng([seed, k])
    inputs = [rng.standard_normal(x.shape) if np.issubdtype(x.dtype, np.floating) else x for x in base.inputs]

    def upstream(index: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.random.default_rng([seed, 1, index, k]).standard_normal(shape)

    return Feed(inputs, base.targets, upstream)


@contextmanager
def _writers(paths: tuple[Path, Path] | None, force: bool, compression: str | None, mode: str,
             described: tuple[str, str]) -> Iterator[tuple[step_store.StepWriter, step_store.StepWriter] | None]:
    """Both sides' step dumps, each renamed into place only when the whole run is written."""
    if paths is None:
        yield None
        return
    elsewhere = f"{term('out')} to write elsewhere"
    with files.replacing(paths[0], force, DumpError, elsewhere) as tmp_a, files.replacing(paths[1], force, DumpError, elsewhere) as tmp_b:
        writers = (step_store.StepWriter(tmp_a, mode, described[0], compression), step_store.StepWriter(tmp_b, mode, described[1], compression))
        try:
            yield writers
        finally:
            for w in writers:
                w.close()


class _Loop:
    """The state carried from step to step: both sides, their optimizers, and what is not re-synced."""

    def __init__(self, sa: StepSide, sb: StepSide, steppers: tuple[Stepper, Stepper], links: list[sync.WeightLink],
                 options: Options, writers: tuple[step_store.StepWriter, step_store.StepWriter] | None) -> None:
        self.sides, self.steppers, self.links, self.options, self.writers = (sa, sb), steppers, links, options, writers
        self.sources = (sa.source, sb.source)
        self.unsynced: set[tuple[str, str]] = set()
        self.pairs: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.parted = False  # free-running: the layers have parted already (later steps are compared plainly)
        self.apart: int | None = None  # free-running: the first step that started from weights apart
        self.drifted: list[int] = []  # free-running: steps apart by rounding amplified, at most (``DRIFT``)
        self.drift_note = ""

    def step(self, k: int, feed: Feed) -> StepDiff:
        sa, sb = self.sides
        if k > 1 and not self.options.free_running:
            self._resync()
        state_before = self.steppers[0].state()
        weights = self._weights(k) if self.options.free_running else 0.0
        whole = self._capture(k, feed)
        # The optimizers step every parameter; --layers records, compares and dumps only the layers it names.
        traces = whole if self.options.layers is None else _selected(whole, self.options.layers, self.sources)
        comparison = self._compare(traces, feed)
        for side in self.sides:
            side.settle()
        stepped = self._optimize(whole, state_before)
        del whole
        self.pairs = pair_buffers(stepped[0].buffers, stepped[1].buffers, self.links, self.sources)
        self._unpaired(stepped)
        found = compare_step(*stepped, self.links, self.pairs, k, self.sources, judge=not self.options.free_running)
        self.unsynced |= found.unsynced
        self.notes += found.notes
        if self.options.free_running and found.culprits and not comparison.match:
            found.culprits = []  # the layers part already: a buffer fed other values says nothing of its own
        result = _step_diff(k, comparison, found)
        result.weights = weights
        if self.apart is not None and not self.parted:
            self._drifting(result)
        if result.parted or k == self.options.steps:
            result.comparison = comparison
        else:  # memory flat in K: of the other steps, the worst tensor of each kind and those that differ
            result.updates, result.state, result.buffers = (_trimmed(d) for d in (result.updates, result.state, result.buffers))
        self.parted = self.parted or result.parted
        if self.writers is not None:
            self._write(k, traces, stepped, comparison)
        return result

    def _drifting(self, result: StepDiff) -> None:
        """Free-running, from weights apart: the step parts when the weights are apart by ``DRIFT`` or more, else it
        drifts (rounding that an optimizer amplifies, or a small difference: re-synced steps tell which)."""
        worst = max(result.weights, result.forward, result.backward, result.params)
        if result.weights >= DRIFT:
            result.weights_apart = True
        elif worst < DRIFT and not result.culprits:
            result.drift = True
            self.drifted.append(result.step)
            self.drift_note = (
                f"from step {self.drifted[0]} the sides drift apart, by at most {worst:.1e} up to step {result.step} (under "
                f"{DRIFT:g}): an optimizer amplifying rounding does this (a gradient zero in exact arithmetic), and so "
                "does a small difference; re-synced steps (without --free-running) judge each step on the same footing"
            )

    def _weights(self, k: int) -> float:
        """How far apart the weights are that step ``k`` starts from, relative to the model's weights (a bias
        that is still zero is apart only by what moves the rest); the first step they are apart is noted."""
        pa = {p.name: p.value for p in self.sides[0].parameters()}
        pb = {p.name: p.value for p in self.sides[1].parameters()}
        scale = float(np.sqrt(np.mean(np.concatenate([np.square(v, dtype=np.float64).ravel() for v in pb.values()] or [np.zeros(1)]))))
        worst, first = 0.0, ""
        for w in self.links:
            d = diff(w.src, w.view(pa[w.src]), pb[w.dst], noise_floor(str(pb[w.dst].dtype), TERMS), scale)
            if d.max_rel > worst:
                worst, first = d.max_rel, w.src if not d.ok else first
        if first and self.apart is None:
            self.apart = k
            self.notes.append(
                f"the weights step {k} starts from differ ({first}: max rel {worst:.1e}), after step {k - 1}'s updates: "
                "from then on no layer is named a culprit (each one holding weights would be). Re-synced steps "
                "(without --free-running) name the step's own culprit"
            )
        return worst

    def _resync(self) -> None:
        (sa, sb), (opt_a, opt_b) = self.sides, self.steppers
        sb.load(sync.carry(self.links, sa.parameters()))
        opt_b.load_state(carried_state(opt_a.state(), self.links, self.unsynced, self.sources))
        held = optimizer.buffers(sa)
        optimizer.load_buffers(sb, {y: held[x].value for x, y in self.pairs if x in held})

    def _capture(self, k: int, feed: Feed) -> tuple[Trace, Trace]:
        o = self.options
        traces: list[Trace] = []
        for side in self.sides:
            side.begin()
            # Re-synced in float64, B holds exact copies of A's weights: A's hash is B's (it is not made again).
            same = bool(traces) and not o.free_running and o.dtype == "float64"
            known = traces[0].info.weights_sha256 if same else None
            traces.append(runner.capture(side, feed, o.dtype, o.seed, known, twice=k == 1 and not o.once))
            if k == 1:
                _check_precision(traces[-1], side.source)
        return traces[0], traces[1]

    def _compare(self, traces: tuple[Trace, Trace], feed: Feed) -> Comparison:
        (ta, tb), (sa, sb), o = traces, self.sides, self.options
        ra, rb = InMemory(ta, sa.source), InMemory(tb, sb.source)
        if not self.options.free_running:
            return isolated(ra, rb, sb, feed, links=self.links, layer_map=o.layer_map, rtol=o.rtol)
        found = compare(ra, rb, links=self.links, layer_map=o.layer_map, rtol=o.rtol)
        if not found.match and not self.parted and self.apart is None:
            # The first step that parts, from the same weights: its culprits, from a replay. From other weights,
            # every layer holding them would be wrong given right inputs, and none of them is the cause.
            found = isolated(ra, rb, sb, feed, links=self.links, layer_map=o.layer_map, rtol=o.rtol)
        # Free-running, the weights differ after the first step by design: the hashes say nothing more.
        found.structure = [line for line in found.structure if not line.startswith("weights_sha256")]
        return found

    def _optimize(self, traces: tuple[Trace, Trace], state_before: optimizer.State) -> tuple[Stepped, Stepped]:
        """Both optimizers' steps: from A's gradients on both sides (re-synced), or each from its own."""
        (ta, tb), (sa, sb), (opt_a, opt_b) = traces, self.sides, self.steppers
        grads_a = {p.name: p.grad for p in ta.params if p.grad is not None}
        if self.options.free_running:
            grads_b = {p.name: p.grad for p in tb.params if p.grad is not None}
        else:
            given = [replace(p, value=p.grad) for p in ta.params if p.grad is not None]
            grads_b = sync.carry([w for w in self.links if w.src in grads_a], given)
        stepped = []
        for side, opt, trace, grads, before in ((sa, opt_a, ta, grads_a, state_before), (sb, opt_b, tb, grads_b, {})):
            settings = opt.settings()  # as this step used them: a scheduler changes them after it
            opt.step(grads)
            after = {p.name: p.value for p in side.parameters()}
            # B's buffers after its replay: its layers' own update of them, from A's values (re-synced).
            buffers = side.afters[-1] if side is sb and not self.options.free_running else side.afters[0]
            stepped.append(Stepped({p.name: p.value for p in trace.params}, after, grads, before, opt.state(), side.start,
                                   buffers, settings, _inputs(trace, buffers)))
        return stepped[0], stepped[1]

    def _unpaired(self, stepped: tuple[Stepped, Stepped]) -> None:
        paired = ({x for x, _ in self.pairs}, {y for _, y in self.pairs})
        for source, s, names in zip(self.sources, stepped, paired):
            alone = [n for n in s.buffers if n not in names]
            if alone:
                self.notes.append(f"buffers only in {source} (not compared): {', '.join(alone)}")

    def _write(self, k: int, traces: tuple[Trace, Trace], stepped: tuple[Stepped, Stepped], comparison: Comparison) -> None:
        assert self.writers is not None
        o = self.options
        names = _around(comparison) if o.stats_only else None
        for n, (writer, trace, s) in enumerate(zip(self.writers, traces, stepped)):
            updates = {name: s.after[name] - s.before[name] for name in s.after if name in s.before}
            extras = (updates, s.state, {b.name: (b.layer, b.value) for b in s.buffers.values()})
            full = None if names is None else names[n].__contains__
            writer.step(k, trace, extras, full, values=not (n == 1 and o.skip_copied_weights and not o.free_running))


def _selected(traces: tuple[Trace, Trace], globs: list[str], sources: tuple[str, str]) -> tuple[Trace, Trace]:
    """The layers ``--layers`` names, with their parameters.

    Raises:
        AlignmentError: a glob that matches no layer of either side.
    """
    chosen = (select(traces[0], globs), select(traces[1], globs))
    for glob in globs:
        if not any(select(t, [glob]).layers for t in chosen):
            raise AlignmentError(
                f"{term('layers')} '{glob}' matches no layer of {' or '.join(sources)}. Layers are named by module path "
                "or tap name (`layerdiff show` lists a dump's): e.g. 'blocks.1.*'."
            )
    return chosen


def _trimmed(diffs: list[TensorDiff]) -> list[TensorDiff]:
    worst = max(diffs, key=lambda t: t.max_rel, default=None)
    return [t for t in diffs if not t.ok or t is worst]


def _inputs(trace: Trace, buffers: dict[str, Buffer]) -> dict[str, np.ndarray]:
    """The input of each layer that holds a buffer, in PyTorch's order: what the buffer's hints are computed from."""
    layers = {b.layer for b in buffers.values()}
    return {r.name: canonical(r.tensors["input"], r.layouts.get("input", "")) for r in trace.layers if r.name in layers and "input" in r.tensors}


def _around(c: Comparison) -> tuple[set[str], set[str]]:
    """The layers of each side around each pass's first divergence: what a stats-only dump keeps the values of."""
    rows = {(l.layer_a, l.layer_b): n for n, l in enumerate(c.layers)}
    names: tuple[set[str], set[str]] = (set(), set())
    for d in (c.forward, c.backward):
        row = rows.get((d.layer_a, d.layer_b)) if d is not None else None
        for near in c.layers[max(row - 1, 0) : row + 2] if row is not None else []:
            names[0].add(near.layer_a)
            names[1].add(near.layer_b)
    return names


def _step_diff(k: int, c: Comparison, found: Found) -> StepDiff:
    def worst(what: str) -> float:
        return max((t.max_rel for layer in c.layers if (t := layer.worst(what)) is not None), default=0.0)

    return StepDiff(k, c.loss_a, c.loss_b, c.match, worst("forward"), worst("backward"), worst("params"), found.updates,
                    found.state, found.buffers, found.culprits, found.notes)
