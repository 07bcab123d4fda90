"""Run both sides on identical weights, inputs and upstream gradient, and return their traces.

The weights come from the first side (or from a dump, when one side is a dump); the inputs, targets and upstream
gradient are made once, in PyTorch's axis order, and fed to both (``Model.run`` lays them out for a channels-last
model). Each side runs twice: a side whose two runs differ has randomness left on, and comparing it would be
comparing noise.
"""

from __future__ import annotations

import copy
import hashlib
import platform
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerdiff import __version__, sync
from layerdiff.adapter import Feed
from layerdiff.compare import NOISE_MARGIN, diff, noise_floor
from layerdiff.errors import AlignmentError, ModelFileError
from layerdiff.modelfile import Model
from layerdiff.progress import Progress, stage
from layerdiff.records import ParamRecord, Trace, canonical, canonical_shape, select, snapshot

DTYPES = ("float64", "native")


@dataclass
class Pair:
    a: Trace
    b: Trace
    links: list[sync.WeightLink]
    weights_from: str
    notes: list[str]
    feed: Feed
    reference: Trace | None = None  # side B rerun in float64, when it ran in a lower precision


def make_feed(sides: list[Model], seed: int) -> tuple[Feed, list[str]]:
    """Inputs, targets and upstream gradient for both sides, from whichever file declares them first."""
    notes = []
    declared = next((m for m in sides if m.inputs is not None), None)
    if declared is not None and declared.inputs is not None:
        inputs = [canonical(x, declared.activation_layout or "") for x in declared.inputs]
        notes.append(f"inputs from {declared.source}: {_shapes(inputs)}")
    else:
        shaped = next((m for m in sides if m.input_shapes is not None), None)
        if shaped is None:
            names = " nor ".join(m.source for m in sides)
            raise ModelFileError(
                f"Neither {names} declares its inputs. Add `input_shape = (batch, features)` (or `inputs = ...`) to one of them."
            )
        rng = np.random.default_rng(seed)
        inputs = [rng.standard_normal(canonical_shape(s, shaped.activation_layout or "")) for s in shaped.input_shapes or []]
        notes.append(f"inputs: seeded normal {_shapes(inputs)} (seed {seed}, shape from {shaped.source})")
    with_loss = [m for m in sides if m.loss is not None]
    if with_loss and len(with_loss) != len(sides):
        lacking = next(m for m in sides if m.loss is None)
        raise ModelFileError(
            f"{with_loss[0].source} defines a loss but {lacking.source} does not. Define `loss` in {lacking.source} "
            f"too, or remove it from {with_loss[0].source} to compare with a seeded random upstream gradient."
        )
    targets = next((m.targets for m in sides if m.targets is not None), None)
    if with_loss:
        notes.append(f"upstream: each side's own loss, targets {_shapes([targets]) if targets is not None else 'none'}")
    else:
        notes.append(f"upstream: seeded random gradient on the output (seed {seed}), loss = <output, r>")

    def upstream(index: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.random.default_rng([seed, 1, index]).standard_normal(shape)

    return Feed(inputs, targets, upstream), notes


def feed_from(recorded: Trace) -> Feed:
    """The feed a dump was made with, so that a script can be compared against it."""

    def upstream(index: int, shape: tuple[int, ...]) -> np.ndarray:
        if index >= len(recorded.upstream) or recorded.upstream[index].shape != shape:
            have = [u.shape for u in recorded.upstream]
            raise ModelFileError(f"The model's output {index} has shape {shape}; the dump's upstream gradients have {have}.")
        return recorded.upstream[index]

    return Feed(recorded.inputs, recorded.targets, upstream)


def capture(
    model: Model,
    feed: Feed,
    dtype: str,
    seed: int,
    weights_sha256: str | None = None,
    twice: bool = True,
    layers: list[str] | None = None,
    values: dict[str, np.ndarray] | None = None,
) -> Trace:
    """Run ``model`` on ``feed``; run it again and measure its run-to-run noise, unless ``twice`` is false.

    ``weights_sha256`` is the hash of the weights it was given (hashed once for both sides); by default its own.
    ``layers``: globs of the layers to keep (the others are dropped as each run ends; their parameters too).
    ``values``: snapshots of the parameter values the model was given, recorded instead of copying them again
    (an adapter may hand out the model's own arrays, which a gradient check or an SGD step later moves).
    """
    whole = model.run(feed)
    for p in whole.params:
        p.value = values[p.name] if values is not None and p.name in values else snapshot(p.value)
    weights_sha256 = weights_sha256 or sync.fingerprint(whole.params)
    first = select(whole, layers) if layers else whole
    del whole
    noise = _run_to_run(model, first, select(model.run(feed), layers) if layers else model.run(feed)) if twice else None
    first.meta = {
        **first.meta,  # the adapter's own settings (JAX's precision flags)
        "framework": model.adapter.name,
        "framework_version": model.adapter.version(),
        "layerdiff_version": __version__,
        "python": platform.python_version(),
        "dtype": dtype,
        "compute_dtype": compute_dtype(first),
        "seed": seed,
        "script": str(model.path or model.source),
        "script_sha256": hashlib.sha256(model.path.read_bytes()).hexdigest() if model.path else "",
        "weights_sha256": weights_sha256,
        "inputs_sha256": sync.digest(feed.inputs),
        "run_to_run": "not measured" if noise is None else noise,
        "upstream_sha256": ("loss:" + sync.digest([feed.targets] if feed.targets is not None else []))
        if model.loss is not None
        else "random:" + sync.digest(first.upstream),
    }
    first.inputs = list(feed.inputs)
    first.targets = feed.targets
    return first


def _run_to_run(model: Model, first: Trace, second: Trace) -> float:
    """The largest relative difference between two identical runs; an error past what rounding explains.

    Nondeterministic kernels stay under the noise floor and widen the tolerances; dropout left on does not.
    Forward values are checked in order first, then gradients from the output, so the layer named is the source.
    """
    for p1, p2 in zip(first.params, second.params):
        if p1.value.shape != p2.value.shape or not np.array_equal(p1.value, p2.value, equal_nan=True):
            raise ModelFileError(
                f"{model.source} changes its parameters during an iteration: '{p1.name}' (layer '{p1.layer}') differs "
                "after a second run (an optimizer step inside backward?). layerdiff compares one iteration on fixed "
                "weights: move the update out of the layers' backward."
            )
    dtype = compute_dtype(first)
    pairs = list(zip(first.layers, second.layers))
    forward = [(r1, r2, k) for r1, r2 in pairs for k in r1.tensors if not k.startswith("grad")]
    backward = [(r1, r2, k) for r1, r2 in reversed(pairs) for k in r1.tensors if k.startswith("grad")]
    worst = 0.0
    for r1, r2, key in forward + backward:
        v1, v2 = r1.tensors[key], r2.tensors.get(key)
        if v2 is not None and v1.shape == v2.shape and np.array_equal(v1, v2, equal_nan=True):
            continue
        d = None if v2 is None else diff(key, v1, v2, noise_floor(dtype, v1.size))
        if d is None or not d.ok:
            raise ModelFileError(
                f"{model.source} is not deterministic: layer '{r1.name}' gives a different {key} on two runs with the "
                "same weights and inputs (dropout or other randomness left on). Turn it off (dropout p=0, or eval() "
                "for a torch module) and run again."
            )
        worst = max(worst, d.max_rel)
    return worst


def compute_dtype(trace: Trace) -> str:
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
) -> Pair:
    """Sync ``b``'s weights to ``a``'s, feed both the same, and capture one iteration of each (only the layers
    ``layers`` names by glob, when given)."""
    _check_dtype(dtype)
    for m in (a, b):
        m.adapter.prepare(m, dtype)
    feed, notes = make_feed([a, b], seed)
    src, links = weight_links(a, b, param_map)
    # The float64 twin is made before B runs in its own precision, from the same weights.
    twin = _float64_twin(b) if dtype == "native" else None
    values = sync.carry(links, src)
    b.adapter.load_parameters(b, values)
    weights_sha256 = sync.fingerprint(src)
    # The snapshots already made (A's parameters, B's copies of them) are what the traces record: no third copy.
    with stage(progress, f"capture {a.source}"):
        ta = capture(a, feed, dtype, seed, weights_sha256, twice, layers, {p.name: p.value for p in src})
    del src
    with stage(progress, f"capture {b.source}"):
        # In float64 B holds exactly the copies it was given; in its own precision, what it holds is recorded.
        exact = dtype == "float64"
        tb = capture(b, feed, dtype, seed, weights_sha256 if exact else None, twice, layers, values if exact else None)
    if layers:
        _check_globs(layers, {a.source: ta, b.source: tb})
    reference = None
    if twin is not None and compute_dtype(tb) != "float64":
        twin.adapter.load_parameters(twin, values)
        reference = twin.run(feed)
        notes.append(f"tolerances: at least {NOISE_MARGIN:g} x the distance of {b.source} to its float64 rerun")
    return Pair(ta, tb, links, a.source, notes, feed, reference)


def weight_links(a: Model, b: Model, param_map: dict[str, str] | None = None) -> tuple[list[ParamRecord], list[sync.WeightLink]]:
    """``a``'s parameters and the parameter of ``b`` each one goes to: explicit map, then names, then order."""
    src = a.adapter.parameters(a)
    links = sync.link(src, b.adapter.parameters(b), {**a.param_map, **_inverse(b.param_map), **(param_map or {})}, a.source, b.source)
    return src, links


def _float64_twin(model: Model) -> Model | None:
    try:
        twin = copy.deepcopy(model)
    except Exception:
        return None  # some objects cannot be copied: then the tolerance rests on the noise floor alone
    twin.adapter.prepare(twin, "float64")
    return twin


def run_against(
    recorded: Trace,
    source: str,
    model: Model,
    param_map: dict[str, str] | None = None,
    twice: bool = True,
    progress: Progress | None = None,
) -> Pair:
    """Run ``model`` with the weights, inputs and upstream gradient of a recorded dump."""
    dtype = str(recorded.meta.get("dtype", "float64"))
    seed = int(recorded.meta.get("seed", 0))
    model.adapter.prepare(model, dtype)
    links = sync.link(recorded.params, model.adapter.parameters(model), {**_inverse(model.param_map), **(param_map or {})}, source, model.source)
    model.adapter.load_parameters(model, sync.carry(links, recorded.params))
    feed = feed_from(recorded)
    with stage(progress, f"capture {model.source}"):
        trace = capture(model, feed, dtype, seed, sync.fingerprint(recorded.params), twice)
    return Pair(recorded, trace, links, source, [f"weights, inputs and upstream gradient from {source}"], feed)


def run_one(
    model: Model,
    dtype: str = "float64",
    seed: int = 0,
    weights: Trace | None = None,
    weights_source: str = "",
    layers: list[str] | None = None,
) -> Trace:
    """One side alone, for ``layerdiff dump``: its own weights, or those of another dump."""
    _check_dtype(dtype)
    model.adapter.prepare(model, dtype)
    if weights is None:
        feed, _ = make_feed([model], seed)
        trace = capture(model, feed, dtype, seed, layers=layers)
    else:
        links = sync.link(weights.params, model.adapter.parameters(model), _inverse(model.param_map), weights_source, model.source)
        model.adapter.load_parameters(model, sync.carry(links, weights.params))
        trace = capture(model, feed_from(weights), dtype, seed, sync.fingerprint(weights.params), layers=layers)
    if layers:
        _check_globs(layers, {model.source: trace})
    return trace


def _check_globs(globs: list[str], traces: dict[str, Trace]) -> None:
    """Refuse a ``--layers`` glob that matches no layer of either side."""
    for glob in globs:
        if not any(select(t, [glob]).layers for t in traces.values()):
            raise AlignmentError(
                f"--layers '{glob}' matches no layer of {' or '.join(traces)}. Layers are named by module path or tap "
                "name (`layerdiff show` lists a dump's): e.g. --layers 'blocks.1.*'."
            )


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ModelFileError(f"--dtype must be one of {', '.join(DTYPES)}, not '{dtype}'.")


def _inverse(mapping: dict[str, str]) -> dict[str, str]:
    return {v: k for k, v in mapping.items()}


def _shapes(arrays: Any) -> str:
    return ", ".join(str(tuple(np.shape(a))) for a in arrays)

