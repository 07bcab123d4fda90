"""Run both sides on identical weights, inputs and upstream gradient, and return their traces.

The weights come from the first side (or from a dump, when one side is a dump); the inputs, targets and upstream
gradient are made once (``feeds``), in PyTorch's axis order, and fed to both (``Side.run`` lays them out for a channels-last
model). Each side runs twice: a side whose two runs differ has randomness left on, and comparing it would be
comparing noise.
"""

from __future__ import annotations

import hashlib
import platform
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from layerdiff import __version__, store, sync
from layerdiff.adapter import Adapter, Feed, Forcing, Lazy, Spec
from layerdiff.capture import Raised, said
from layerdiff.determinism import run_to_run
from layerdiff.errors import AlignmentError, ModelFileError, term
from layerdiff.feeds import feed_from as feed_from
from layerdiff.feeds import make_feed as make_feed  # re-exported: gradcheck, overfit and the benchmarks make feeds here
from layerdiff.layout import canonical, canonical_shape, from_canonical
from layerdiff.modelfile import Model
from layerdiff.namemaps import resolve
from layerdiff.progress import Progress, stage
from layerdiff.records import InMemory, ParamRecord, Trace, placeholder, select, snapshot
from layerdiff.stats import digest, fingerprint
from layerdiff.weights import equal_links, weight_check

if TYPE_CHECKING:
    from layerdiff.results import WeightCheck
    from layerdiff.twins import Twins

DTYPES = ("float64", "native")
RECORDED = "recorded:"  # an upstream gradient recorded in the user's own training loop (``layerdiff.record``)
WEIGHTS = ("a", "own")  # B gets A's weights; each side keeps its own


@dataclass
class Side:
    """A model ready to run: the adapter's handle on it (``Prepared.model``), what its file declared, and the axes
    of its activations where they are not PyTorch's (``"N H W C"``)."""

    model: Model
    handle: Any
    layout: str

    @property
    def adapter(self) -> Adapter:
        return self.model.adapter

    @property
    def spec(self) -> Spec:
        return self.model.spec

    @property
    def source(self) -> str:
        return self.model.source

    def parameters(self) -> list[ParamRecord]:
        return self.adapter.parameters(self.handle, self.spec)

    def load(self, values: dict[str, np.ndarray]) -> None:
        self.adapter.load_parameters(self.handle, self.spec, values)

    def build(self, feed: Feed) -> None:
        """Let the adapter make the weights a model makes on its first forward (an optional adapter method)."""
        if hasattr(self.adapter, "build"):
            own = [from_canonical(x, self.layout) for x in feed.inputs] if self.layout else feed.inputs
            self.adapter.build(self.handle, self.spec, Feed(own, feed.targets, feed.upstream, feed.names))

    def run(self, feed: Feed, forcing: Forcing | None = None) -> Trace:
        """One iteration through the adapter, on a feed (and forced values) held in PyTorch's axis order.

        A model whose activations are laid out otherwise receives its inputs, upstream gradient and forced values
        transposed; its recorded tensors with as many axes as its layout are marked with it.
        """
        layout = self.layout
        if not layout:
            return self.adapter.run(self.handle, self.spec, feed, forcing)

        def upstream(index: int, shape: tuple[int, ...]) -> np.ndarray:
            return from_canonical(feed.upstream(index, canonical_shape(shape, layout)), layout)

        own = Feed([from_canonical(x, layout) for x in feed.inputs], feed.targets, upstream, feed.names)
        if forcing is not None:
            forcing = Forcing(*(_laid_out(table, layout) for table in (forcing.outputs, forcing.grad_outputs)))
        trace = self.adapter.run(self.handle, self.spec, own, forcing)
        rank = len(layout.split())
        for record in trace.layers:
            # A layer that changes the rank (a Flatten) takes its input as the model keeps it: a port permutes
            # before flattening in the same order.
            flattens = any(v.ndim != rank for k, v in record.tensors.items() if k.startswith("output"))
            kept = [k for k, v in record.tensors.items() if v.ndim == rank and not (flattens and k.startswith(("input", "grad_input")))]
            record.layouts.update({k: layout for k in kept if k not in record.layouts})
        trace.upstream = [canonical(u, layout) for u in trace.upstream]
        return trace


def _laid_out(table: Mapping[str, list[np.ndarray]], layout: str) -> Lazy:
    """A forcing table whose values are transposed to ``layout`` as they are asked for."""

    def read(name: str) -> list[np.ndarray]:
        return [from_canonical(v, layout) for v in table[name]]

    return Lazy({name: partial(read, name) for name in table})


def prepare(model: Model, dtype: str) -> Side:
    """The model cast for ``dtype`` (``"float64"``, or ``"native"``: its own precision), ready to run."""
    _check_dtype(dtype)
    prepared = model.adapter.prepare(model.obj, model.spec, dtype)
    layout = model.activation_layout if model.activation_layout is not None else prepared.activation_layout
    return Side(model, prepared.model, layout)


@dataclass
class Pair:
    a: Trace
    b: Trace
    links: list[sync.WeightLink]
    weights_from: str
    notes: list[str]
    feed: Feed
    live: Side  # side B, as it ran: what a replay runs again
    twins: Twins | None = None  # --dtype native: each side rerun in float64, and the rounded sides' precision
    weights: WeightCheck | None = None  # --weights own: each side's own weights, compared
    live_a: Side | None = None  # side A, as it ran, when it is a model file: what a zoom runs again


def weights_hash(params: list[ParamRecord]) -> str:
    """The hash of a side's weights, the same whatever framework and layout hold them."""
    return fingerprint((p.value, p.layout) for p in params)


Spill = Callable[[Trace], Path]  # writes a side's first run to its dump, as soon as it ends; returns the dump's path


def capture(
    side: Side,
    feed: Feed,
    dtype: str,
    seed: int,
    weights_sha256: str | None = None,
    twice: bool = True,
    layers: list[str] | None = None,
    values: dict[str, np.ndarray] | None = None,
    partial: bool = False,
    spill: Spill | None = None,
) -> Trace:
    """Run ``side`` on ``feed``; run it again and measure its run-to-run noise, unless ``twice`` is false.

    ``weights_sha256`` is the hash of the weights it was given (hashed once for both sides); by default its own.
    ``layers``: globs of the layers to keep (the others are dropped as each run ends; their parameters too).
    ``values``: snapshots of the parameter values the model was given, recorded instead of copying them again
    (an adapter may hand out the model's own arrays, which a gradient check or an SGD step later moves).
    ``partial``: a backward pass that raises gives the trace recorded up to it (``Trace.failure``), run once.
    ``spill``: the first run goes to its dump as soon as it ends, and the trace returned keeps only its form
    (names, shapes, notes): the second run is checked against the dump, so two runs are never held at once.
    """
    try:
        whole = side.run(feed)
    except Raised as raised:
        if not partial:
            raise
        whole, twice = raised.trace, False
    for p in whole.params:
        p.value = values[p.name] if values is not None and p.name in values else snapshot(p.value)
    weights_sha256 = weights_sha256 or weights_hash(whole.params)
    first = select(whole, layers) if layers else whole
    del whole
    _describe(first, side, feed, dtype, seed, weights_sha256)
    path = spill(first) if spill is not None else None
    if path is not None:
        _forget(first, values=False)
    if twice:
        second = select(side.run(feed), layers) if layers else side.run(feed)
        with nullcontext(InMemory(first, side.source)) if path is None else store.Dump(path) as kept:
            noise = run_to_run(side.source, compute_dtype(first), kept, first.params, second)
        del second
        first.info = replace(first.info, run_to_run=noise)
        if path is not None:
            store.update_info(path, first.info)
    if path is not None:
        _forget(first, values=True)
    return first


def _describe(trace: Trace, side: Side, feed: Feed, dtype: str, seed: int, weights_sha256: str) -> None:
    """What a dump says of the run besides its values: versions, dtypes, the hashes of weights, inputs, upstream."""
    model = side.model
    trace.info = replace(
        trace.info,  # the adapter's own settings (JAX's precision flags)
        framework=side.adapter.name,
        framework_version=side.adapter.version(),
        layerdiff_version=__version__,
        python=platform.python_version(),
        dtype=dtype,
        compute_dtype=compute_dtype(trace),
        seed=seed,
        script=str(model.path or model.source),
        script_sha256=hashlib.sha256(model.path.read_bytes()).hexdigest() if model.path else "",
        weights_sha256=weights_sha256,
        inputs_sha256=digest(feed.inputs),
        run_to_run=None,
        upstream_sha256=("loss:" + digest([feed.targets] if feed.targets is not None else []))
        if model.loss is not None
        else "random:" + digest(trace.upstream),
    )
    trace.inputs = list(feed.inputs)
    trace.input_names = feed.names
    trace.targets = feed.targets


def _forget(trace: Trace, values: bool) -> None:
    """Drop what a spilled trace's dump now holds: its layers' tensors and its parameters' gradients, and with
    ``values`` the parameter values too (kept until the second run, which must not have moved them). Names,
    shapes and notes stay, for the checks of the pair that read no value."""
    for r in trace.layers:
        r.tensors.clear()
    for p in trace.params:
        p.grad = None if p.grad is None else placeholder(p.grad.shape, p.grad.dtype)
        if values:
            p.value = placeholder(p.value.shape, p.value.dtype)


def compute_dtype(trace: Trace) -> str:
    if "framework_dtype" in trace.info.settings:  # bfloat16, recorded in float32
        return trace.info.settings["framework_dtype"]
    for r in trace.layers:
        for v in r.tensors.values():
            if np.issubdtype(v.dtype, np.floating):
                return str(v.dtype)
    return "float64"


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
    spill: tuple[Spill, Spill] | None = None,
) -> Pair:
    """Sync ``b``'s weights to ``a``'s (``weights="a"``), or let each keep its own and compare them first (``"own"``);
    feed both the same, and capture one iteration of each (only the layers ``layers`` names by glob, when given).
    ``spill``: each side's writer of its dump (``capture``); the pair's traces then keep only their form."""
    _check_weights(weights)
    sa, sb = prepare(a, dtype), prepare(b, dtype)
    feed, notes = make_feed([sa, sb], seed)
    src, links = weight_links(sa, sb, param_map)
    check = None if weights == "a" else weight_check(src, sb.parameters(), links, a.source, b.source)
    values = sync.carry(links if check is None else equal_links(links, check), src)
    sb.load(values)
    weights_sha256 = weights_hash(src)
    # The snapshots already made (A's parameters, B's copies of them) are what the traces record: no third copy.
    with stage(progress, f"capture {a.source}"):
        ta = capture(sa, feed, dtype, seed, weights_sha256, twice, layers, {p.name: p.value for p in src}, partial=True,
                     spill=spill[0] if spill else None)
    del src
    with stage(progress, f"capture {b.source}"):
        # In float64 B holds exactly the copies it was given; in its own precision, what it holds is recorded.
        exact = dtype == "float64" and check is None
        tb = capture(sb, feed, dtype, seed, weights_sha256 if exact else None, twice, layers, values if exact else None, partial=True,
                     spill=spill[1] if spill else None)
    if layers:
        _check_globs(layers, {a.source: ta, b.source: tb})
    links = sync.annotate(links, ta.params, tb.params, a.source, b.source)
    notes += said(ta, a.source) + said(tb, b.source)
    return Pair(ta, tb, links, a.source if check is None else "", notes, feed, sb, weights=check, live_a=sa)


def weight_links(a: Side, b: Side, param_map: dict[str, str] | None = None) -> tuple[list[ParamRecord], list[sync.WeightLink]]:
    """``a``'s parameters and the parameter of ``b`` each one goes to: explicit map, then names, then order."""
    src, dst = a.parameters(), b.parameters()
    explicit = resolve({**a.model.param_map, **(param_map or {})}, b.model.param_map, _names(src), _names(dst), "parameter")
    return src, sync.link(src, dst, explicit, a.source, b.source)


def run_against(
    recorded: Trace,
    source: str,
    model: Model,
    param_map: dict[str, str] | None = None,
    twice: bool = True,
    progress: Progress | None = None,
    weights: str = "a",
) -> Pair:
    """Run ``model`` with the weights (or, ``weights="own"``, its own, compared with them), inputs and upstream
    gradient of a recorded dump. A dump recorded inside a training loop (``layerdiff.record``) gives the gradient
    at the model's output, which stands for the loss: the model file's own loss, if it declares one, is not used."""
    _check_weights(weights)
    dtype, seed = recorded.info.dtype, recorded.info.seed
    notes = [f"weights, inputs and upstream gradient from {source}"]
    if recorded.info.upstream_sha256.startswith(RECORDED) and model.loss is not None:
        model = replace(model, spec=replace(model.spec, loss=None))
        notes.append(f"the gradient {source} recorded at the output stands for the loss: {model.source}'s is not used")
    side = prepare(model, dtype)
    feed = feed_from(recorded)
    side.build(feed)
    own = side.parameters()
    explicit = resolve(param_map or {}, model.param_map, _names(recorded.params), _names(own), "parameter")
    links = sync.link(recorded.params, own, explicit, source, model.source)
    check = None if weights == "a" else weight_check(recorded.params, own, links, source, model.source)
    side.load(sync.carry(links if check is None else equal_links(links, check), recorded.params))
    with stage(progress, f"capture {model.source}"):
        trace = capture(side, feed, dtype, seed, weights_hash(recorded.params) if check is None else None, twice, partial=True)
    if recorded.info.upstream_sha256.startswith(RECORDED):
        trace.info = replace(trace.info, upstream_sha256=RECORDED + digest(trace.upstream))
    links = sync.annotate(links, recorded.params, trace.params, source, model.source)
    if check is not None:
        notes[0] = f"inputs and upstream gradient from {source}"
    notes += said(trace, model.source)
    return Pair(recorded, trace, links, source if check is None else "", notes, feed, side, weights=check)


def run_one(
    model: Model,
    dtype: str = "float64",
    seed: int = 0,
    weights: Trace | None = None,
    weights_source: str = "",
    layers: list[str] | None = None,
) -> Trace:
    """One side alone, for ``layerdiff dump``: its own weights, or those of another dump."""
    side = prepare(model, dtype)
    if weights is None:
        feed, _ = make_feed([side], seed)
        trace = capture(side, feed, dtype, seed, layers=layers)
    else:
        side.build(feed_from(weights))
        own = side.parameters()
        explicit = resolve({}, model.param_map, _names(weights.params), _names(own), "parameter")
        links = sync.link(weights.params, own, explicit, weights_source, model.source)
        side.load(sync.carry(links, weights.params))
        trace = capture(side, feed_from(weights), dtype, seed, weights_hash(weights.params), layers=layers)
    if layers:
        _check_globs(layers, {model.source: trace})
    return trace


def _check_globs(globs: list[str], traces: dict[str, Trace]) -> None:
    """Refuse a ``--layers`` glob that matches no layer of either side."""
    for glob in globs:
        if not any(select(t, [glob]).layers for t in traces.values()):
            raise AlignmentError(
                f"{term('layers')} '{glob}' matches no layer of {' or '.join(traces)}. Layers are named by module path "
                "or tap name (`layerdiff show` lists a dump's): e.g. 'blocks.1.*'."
            )


def _check_weights(weights: str) -> None:
    if weights not in WEIGHTS:
        raise ModelFileError(f"{term('weights')} must be one of {', '.join(WEIGHTS)}, not '{weights}'.")


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ModelFileError(f"{term('dtype')} must be one of {', '.join(DTYPES)}, not '{dtype}'.")


def _names(params: list[ParamRecord]) -> list[str]:
    return [p.name for p in params]

