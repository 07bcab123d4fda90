"""Run both sides on identical weights, inputs and upstream gradient, and return their traces.

The weights come from the first side (or from a dump, when one side is a dump); the inputs, targets and upstream
gradient are made once and fed to both. Each side runs twice: a side whose two runs differ has randomness left on,
and comparing it would be comparing noise.

The feed is held in PyTorch's axis order; a model whose activations are laid out otherwise (channels-last) gets it
transposed, and its recorded tensors of that rank are marked with the layout, for the comparison to transpose back.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerdiff import __version__, sync
from layerdiff.adapter import Feed
from layerdiff.errors import ModelFileError
from layerdiff.modelfile import Model
from layerdiff.records import ParamRecord, Trace

DTYPES = ("float64", "native")


@dataclass
class Pair:
    a: Trace
    b: Trace
    links: list[sync.WeightLink]
    weights_from: str
    notes: list[str]


def make_feed(sides: list[Model], seed: int) -> tuple[Feed, list[str]]:
    """Inputs, targets and upstream gradient for both sides, from whichever file declares them first."""
    notes = []
    declared = next((m for m in sides if m.inputs is not None), None)
    if declared is not None:
        inputs = [sync.canonical(x, declared.activation_layout or "") for x in declared.inputs or []]
        notes.append(f"inputs from {declared.source}: {_shapes(inputs)}")
    else:
        shaped = next((m for m in sides if m.input_shapes is not None), None)
        if shaped is None:
            names = " nor ".join(m.source for m in sides)
            raise ModelFileError(
                f"Neither {names} declares its inputs. Add `input_shape = (batch, features)` (or `inputs = ...`) to one of them."
            )
        rng = np.random.default_rng(seed)
        inputs = [rng.standard_normal(sync.canonical_shape(s, shaped.activation_layout or "")) for s in shaped.input_shapes or []]
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


def capture(model: Model, feed: Feed, dtype: str, seed: int, weights: list[ParamRecord] | None = None) -> Trace:
    """Run ``model`` twice on ``feed`` and return the first run, checked against the second."""
    layout = model.activation_layout or ""
    own = _laid_out(feed, layout)
    first = model.adapter.run(model, own)
    second = model.adapter.run(model, own)
    _check_deterministic(model, first, second)
    _mark_layout(first, layout)
    first.meta = {
        **first.meta,  # the adapter's own settings (precision flags)
        "framework": model.adapter.name,
        "framework_version": model.adapter.version(),
        "layerdiff_version": __version__,
        "python": platform.python_version(),
        "dtype": dtype,
        "compute_dtype": compute_dtype(first),
        "seed": seed,
        "script": str(model.path or model.source),
        "script_sha256": hashlib.sha256(model.path.read_bytes()).hexdigest() if model.path else "",
        "weights_sha256": sync.fingerprint(weights if weights is not None else first.params),
        "inputs_sha256": sync.digest(feed.inputs),
        "upstream_sha256": ("loss:" + sync.digest([feed.targets] if feed.targets is not None else []))
        if model.loss is not None
        else "random:" + sync.digest(first.upstream),
    }
    first.inputs = list(feed.inputs)
    first.targets = feed.targets
    return first


def _laid_out(feed: Feed, layout: str) -> Feed:
    """The feed as a model whose activations are laid out as ``layout`` takes it."""
    if not layout:
        return feed

    def upstream(index: int, shape: tuple[int, ...]) -> np.ndarray:
        return sync.from_canonical(feed.upstream(index, sync.canonical_shape(shape, layout)), layout)

    return Feed([sync.from_canonical(x, layout) for x in feed.inputs], feed.targets, upstream)


def _mark_layout(trace: Trace, layout: str) -> None:
    """Name the axes of every recorded tensor that has as many as ``layout``; keep the upstream in PyTorch's order."""
    if not layout:
        return
    rank = len(layout.split())
    for record in trace.layers:
        for key, value in record.tensors.items():
            if value.ndim == rank:
                record.layouts.setdefault(key, layout)
    trace.upstream = [sync.canonical(u, layout) for u in trace.upstream]


def _check_deterministic(model: Model, first: Trace, second: Trace) -> None:
    """Name the first layer whose two runs differ: forward values in order, then gradients from the output."""
    pairs = list(zip(first.layers, second.layers))
    forward = [(r1, r2, k) for r1, r2 in pairs for k in r1.tensors if not k.startswith("grad")]
    backward = [(r1, r2, k) for r1, r2 in reversed(pairs) for k in r1.tensors if k.startswith("grad")]
    for r1, r2, key in forward + backward:
        v1, v2 = r1.tensors[key], r2.tensors.get(key)
        if v2 is None or v1.shape != v2.shape or not np.array_equal(v1, v2, equal_nan=True):
            raise ModelFileError(
                f"{model.source} is not deterministic: layer '{r1.name}' gives a different {key} on two runs with the "
                "same weights and inputs (dropout or other randomness left on). Turn it off (p=0, eval mode, "
                "training=False) and run again."
            )


def compute_dtype(trace: Trace) -> str:
    for r in trace.layers:
        for v in r.tensors.values():
            if np.issubdtype(v.dtype, np.floating):
                return str(v.dtype)
    return "float64"


def run_pair(a: Model, b: Model, dtype: str = "float64", seed: int = 0, param_map: dict[str, str] | None = None) -> Pair:
    """Sync ``b``'s weights to ``a``'s, feed both the same, and capture one iteration of each."""
    _check_dtype(dtype)
    for m in (a, b):
        m.adapter.prepare(m, dtype)
    feed, notes = make_feed([a, b], seed)
    src = a.adapter.parameters(a)
    links = sync.link(src, b.adapter.parameters(b), {**a.param_map, **_inverse(b.param_map), **(param_map or {})}, a.source, b.source)
    b.adapter.load_parameters(b, sync.carry(links, src))
    ta = capture(a, feed, dtype, seed, src)
    tb = capture(b, feed, dtype, seed, src)
    return Pair(ta, tb, links, a.source, notes)


def run_against(recorded: Trace, source: str, model: Model, param_map: dict[str, str] | None = None) -> Pair:
    """Run ``model`` with the weights, inputs and upstream gradient of a recorded dump."""
    dtype = str(recorded.meta.get("dtype", "float64"))
    seed = int(recorded.meta.get("seed", 0))
    model.adapter.prepare(model, dtype)
    links = sync.link(recorded.params, model.adapter.parameters(model), {**_inverse(model.param_map), **(param_map or {})}, source, model.source)
    model.adapter.load_parameters(model, sync.carry(links, recorded.params))
    feed = feed_from(recorded)
    trace = capture(model, feed, dtype, seed, recorded.params)
    return Pair(recorded, trace, links, source, [f"weights, inputs and upstream gradient from {source}"])


def run_one(model: Model, dtype: str = "float64", seed: int = 0, weights: Trace | None = None, weights_source: str = "") -> Trace:
    """One side alone, for ``layerdiff dump``: its own weights, or those of another dump."""
    _check_dtype(dtype)
    model.adapter.prepare(model, dtype)
    if weights is None:
        feed, _ = make_feed([model], seed)
        return capture(model, feed, dtype, seed)
    links = sync.link(weights.params, model.adapter.parameters(model), _inverse(model.param_map), weights_source, model.source)
    model.adapter.load_parameters(model, sync.carry(links, weights.params))
    return capture(model, feed_from(weights), dtype, seed, weights.params)


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ModelFileError(f"--dtype must be one of {', '.join(DTYPES)}, not '{dtype}'.")


def _inverse(mapping: dict[str, str]) -> dict[str, str]:
    return {v: k for k, v in mapping.items()}


def _shapes(arrays: Any) -> str:
    return ", ".join(str(tuple(np.shape(a))) for a in arrays)

