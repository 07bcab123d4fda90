"""Finite-difference gradient check of one network, per layer and per parameter tensor, in float64.

Everything goes through the adapter protocol, so any adapter is checked the same way:
- a parameter coordinate is moved with ``load_parameters``;
- a network input is moved in the feed;
- a layer's output is moved with teacher forcing (``Forcing.outputs``), so that the layers after it receive the
  moved value: the derivative of the loss with respect to that output, which is also the derivative with respect to
  the input of the layer that consumes it.

Each layer is then judged on what it computes itself: a layer is *wrong* when its input gradient or a parameter
gradient is wrong while the gradient arriving at its output is right; *inherited* when what arrives is already wrong.

Per coordinate, the central difference ``(L(θ+h) - L(θ-h)) / 2h`` is taken first at h = 1e-5 (about eps^(1/3),
where truncation and rounding errors of float64 balance); when that does not agree, or a kink was crossed, at every
step of ``STEPS``, and the estimate is taken where neighbouring steps agree best. Their disagreement is the estimate's
own uncertainty, subtracted before the relative error ``|a - n| / max(|a|, |n|)`` is judged, so that rounding noise
at a zero gradient is not called an error.

A kink is crossed when some layer's output bends between θ-h and θ+h: its second difference
``o(θ+h) + o(θ-h) - 2 o(θ)`` is a sizeable part of its first difference (a ReLU, max or abs mask flipping); smooth
functions keep that ratio near h. A coordinate whose every step crosses a kink is reported as "kink", never as wrong.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from layerdiff import blame, runner
from layerdiff.adapter import Feed, Forcing
from layerdiff.compare import checkable_grad
from layerdiff.errors import ModelFileError, term
from layerdiff.differences import ACCEPTABLE as ACCEPTABLE  # re-exported: the tests judge errors by it
from layerdiff.differences import ROUNDING, Estimate, estimate, judge_point
from layerdiff.layout import canonical
from layerdiff.modelfile import Model
from layerdiff.records import LayerRecord, Trace, key_order
from layerdiff.results import Check, GradCheck, LayerCheck, Point

EXHAUSTIVE = 32  # tensors this small are checked at every coordinate
TOP = 4  # largest-gradient coordinates per tensor
ZEROS = 2  # zero-gradient coordinates per tensor
SAMPLES = 8  # random coordinates per tensor
UNRECORDED = "unrecorded"  # the kind of a layer that owns parameters but records no values (free-form code)


@dataclass
class _Probe:
    """A value that can be moved: a parameter, a network input or a layer's output; and who reads its gradient."""

    label: str
    base: np.ndarray
    run: Callable[[np.ndarray, dict[str, list[np.ndarray]]], Trace]  # (moved value, layer outputs pinned) -> trace
    analytic: list[tuple[Check, np.ndarray]] = field(default_factory=list)
    done: Callable[[], None] = lambda: None
    seen_by: int | None = None  # the layer whose output this is, when a consumer recorded must receive it moved


def gradcheck(
    model: Model,
    *,
    samples: int = SAMPLES,
    full: bool = False,
    seed: int = 0,
    at: dict[str, list[tuple[int, ...]]] | None = None,
) -> GradCheck:
    """Check every layer's and parameter's gradient of ``model`` against central differences of its loss.

    Args:
        model: a loaded model (``modelfile.load`` or ``modelfile.from_object``); it is cast to float64.
        samples: random coordinates per tensor, beside the largest-gradient and zero-gradient ones.
        full: check every coordinate of every tensor.
        at: extra coordinates to check, by parameter name or layer name (that layer's input).

    Raises:
        ModelFileError: the model cannot run in float64, is not deterministic, or its loss is not finite.
    """
    started = time.perf_counter()
    side = runner.prepare(model, "float64")
    feed, notes = runner.make_feed([side], seed)
    base = _canonical(runner.capture(side, feed, "float64", seed))
    if runner.compute_dtype(base) != "float64":
        raise ModelFileError(
            f"{model.source} still computes in {runner.compute_dtype(base)} after casting its parameters to float64; "
            "finite differences need float64. Remove the hard-coded casts (astype(np.float32)) from its layers."
        )
    if base.loss is None or not np.isfinite(base.loss):
        raise ModelFileError(
            f"{model.source} has loss {base.loss} at its starting point; a gradient check needs a finite loss. "
            "Run `layerdiff inspect` on it to find the first layer that produces NaN/Inf."
        )
    counter = [0]

    def run(feed_: Feed, forcing: Forcing | None = None) -> Trace:
        counter[0] += 1
        return _canonical(side.run(feed_, forcing))

    layers = [LayerCheck(r.name, r.kind, "ok", []) for r in base.layers]  # one per record, by index
    unrecorded: list[LayerCheck] = []
    probes = _param_probes(side, base, feed, run, layers, unrecorded, notes) + _value_probes(base, feed, run, layers, notes)
    rng = np.random.default_rng(seed)
    extra = _extra(probes, at or {})
    for probe in probes:
        _check(probe, base, _coordinates(probe, rng, samples, full, extra.get(id(probe), [])), notes)
    layers = unrecorded + layers
    blame.judge_gradients(layers, UNRECORDED)
    checked = [layer for layer in layers if layer.checks]
    return GradCheck(model.source, checked, counter[0], time.perf_counter() - started, notes)


def _canonical(trace: Trace) -> Trace:
    """Every recorded tensor in PyTorch's axis order, as feeds and forced values are given (channels-last models)."""
    for r in trace.layers:
        r.tensors = {k: canonical(v, r.layouts.get(k, "")) for k, v in r.tensors.items()}
        r.layouts = {}
    return trace


def _extra(probes: list[_Probe], at: dict[str, list[tuple[int, ...]]]) -> dict[int, list[tuple[int, ...]]]:
    """``at``'s coordinates by probe: a parameter's name, or a layer's name for that layer's input."""
    found: dict[int, list[tuple[int, ...]]] = {}
    names = {}
    for probe in probes:
        for check, _ in probe.analytic:
            if check.tensor == probe.label:
                names[probe.label] = probe
            elif check.tensor == "input":
                names[check.layer] = probe
    for name, indices in at.items():
        if name not in names:
            raise ModelFileError(f"{term('at')} names '{name}', which is neither a parameter nor a layer with a checked input. Checked: {', '.join(names)}.")
        found.setdefault(id(names[name]), []).extend(tuple(int(i) for i in index) for index in indices)
    return found


def _param_probes(
    side: runner.Side, base: Trace, feed: Feed, run: Callable[..., Trace], layers: list[LayerCheck], unrecorded: list[LayerCheck], notes: list[str]
) -> list[_Probe]:
    by_name = {layer.name: layer for layer in layers}
    probes = []
    for p in base.params:
        if not np.issubdtype(p.value.dtype, np.floating):
            continue
        grad, said = checkable_grad(side.source, p.name, p.grad, p.value)
        notes += [said] if said else []
        owner = by_name.get(p.layer)
        if owner is None:
            # Free-form code recorded through taps: its parameters belong to no recorded layer.
            owner = by_name[p.layer] = LayerCheck(p.layer, UNRECORDED, "ok", [])
            unrecorded.append(owner)
        check = Check(p.layer, p.name, tuple(p.value.shape), [])
        owner.checks.append(check)

        def load_and_run(value: np.ndarray, pin: dict[str, list[np.ndarray]], name: str = p.name) -> Trace:
            side.load({name: value})
            return run(feed)

        def restore(name: str = p.name, value: np.ndarray = p.value) -> None:
            side.load({name: value})

        probes.append(_Probe(p.name, p.value, load_and_run, [(check, grad)], restore))
    return probes


def _value_probes(base: Trace, feed: Feed, run: Callable[..., Trace], layers: list[LayerCheck], notes: list[str]) -> list[_Probe]:
    """Probes on the network inputs and on every layer's outputs, with the input and output checks they serve."""
    records = base.layers
    probes: dict[tuple[int, str], _Probe] = {}  # (producer index or -1 - input number, output key)
    for i, x in enumerate(feed.inputs):
        if np.issubdtype(np.asarray(x).dtype, np.floating):
            probes[-1 - i, "input"] = _Probe(f"input {i}", np.asarray(x, dtype=np.float64), _feed_runner(feed, i, run))
    for k, r in enumerate(records):
        for key, value in r.tensors.items():
            if key.startswith("output") and value.ndim > 0 and np.issubdtype(value.dtype, np.floating):
                probes[k, key] = _Probe(f"{r.name} {key}", value, _forcing_runner(feed, r.name, r.tensors, key, run))
    consumers: dict[tuple[int, str], list[tuple[int, str]]] = {}
    for k, r in enumerate(records):
        for key, value in r.tensors.items():
            if key.startswith("input"):
                source = _producer(value, k, records, feed)
                if source is not None and source in probes:
                    consumers.setdefault(source, []).append((k, key))
    for source, probe in probes.items():
        readers = consumers.get(source, [])
        for k, key in readers if len(readers) == 1 else []:
            grad = records[k].tensors.get(key.replace("input", "grad_input"))
            if grad is None or grad.shape != probe.base.shape:
                continue
            if not _only_path(probe, grad, records[k], base):
                notes.append(f"{probe.label} also reaches the loss by a path no layer records: {records[k].name}'s input gradient is not checked alone")
                continue
            check = Check(records[k].name, key, tuple(grad.shape), [])
            layers[k].checks.insert(0, check)
            probe.analytic.append((check, grad))
            if source[0] >= 0:
                probe.seen_by = source[0]
        if len(readers) > 1:
            notes.append(f"{probe.label} feeds {len(readers)} layers: their input gradients add up, checked as one at its source")
        if source[0] >= 0:
            k, key = source
            grad = records[k].tensors.get(key.replace("output", "grad_output"))
            if grad is not None and grad.shape == probe.base.shape:
                check = Check(records[k].name, key, tuple(grad.shape), [], shown=not probe.analytic)
                layers[k].checks.append(check)
                probe.analytic.append((check, grad))
    return [p for p in probes.values() if p.analytic]


def _only_path(probe: _Probe, grad: np.ndarray, consumer: LayerRecord, base: Trace) -> bool:
    """Whether the value reaches the loss only through ``consumer``: moved while the consumer's outputs are pinned
    to their recorded values, the loss must not move. A residual (``x + f(x)``) fails this, and then the
    consumer's input gradient is only part of the value's."""
    if consumer is base.layers[-1] and all(v.ndim == 0 for v in _outputs(consumer.tensors)):
        return True  # the loss itself: nothing comes after it
    i = int(np.argmax(np.abs(np.nan_to_num(grad)).ravel()))
    moved = probe.base.copy()
    moved.flat[i] += 1e-4 * max(1.0, abs(float(moved.flat[i])))
    free = float(probe.run(moved, {}).loss or 0.0)
    pinned = float(probe.run(moved, {consumer.name: _outputs(consumer.tensors)}).loss or 0.0)
    f0 = float(base.loss or 0.0)
    return abs(pinned - f0) <= max(1e-6 * abs(free - f0), ROUNDING * max(abs(f0), 1.0))


def _producer(value: np.ndarray, k: int, records: list[LayerRecord], feed: Feed) -> tuple[int, str] | None:
    """Where layer ``k``'s input comes from: the latest earlier output, or network input, holding the same values."""
    for j in range(k - 1, -1, -1):
        for key, out in records[j].tensors.items():
            if key.startswith("output") and out.shape == value.shape and np.array_equal(out, value):
                return j, key
    for i, x in enumerate(feed.inputs):
        if np.shape(x) == value.shape and np.array_equal(x, value):
            return -1 - i, "input"
    return None


def _feed_runner(feed: Feed, i: int, run: Callable[..., Trace]) -> Callable[[np.ndarray, dict[str, list[np.ndarray]]], Trace]:
    def moved(value: np.ndarray, pin: dict[str, list[np.ndarray]]) -> Trace:
        inputs = list(feed.inputs)
        inputs[i] = value
        return run(Feed(inputs, feed.targets, feed.upstream, feed.names), Forcing(outputs=pin) if pin else None)

    return moved


def _outputs(tensors: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [tensors[k] for k in sorted((k for k in tensors if k.startswith("output")), key=key_order)]


def _forcing_runner(feed: Feed, name: str, tensors: dict[str, np.ndarray], key: str, run: Callable[..., Trace]) -> Callable[[np.ndarray, dict[str, list[np.ndarray]]], Trace]:
    outputs = _outputs(tensors)
    index = sorted((k for k in tensors if k.startswith("output")), key=key_order).index(key)

    def forced(value: np.ndarray, pin: dict[str, list[np.ndarray]]) -> Trace:
        values = list(outputs)
        values[index] = value
        return run(feed, Forcing(outputs={**pin, name: values}))

    return forced


def _coordinates(probe: _Probe, rng: np.random.Generator, samples: int, full: bool, extra: list[tuple[int, ...]]) -> list[int]:
    """Flat indices: every one for small tensors or ``full``; else the largest gradients, a random set, some zeros."""
    size = probe.base.size
    for index in extra:
        if len(index) != probe.base.ndim or any(not 0 <= i < d for i, d in zip(index, probe.base.shape)):
            raise ModelFileError(f"{term('at')} {probe.label}={','.join(map(str, index))} is outside its shape {probe.base.shape}.")
    chosen = [int(np.ravel_multi_index(index, probe.base.shape)) for index in extra]
    if full or size <= EXHAUSTIVE:
        return chosen + [i for i in range(size) if i not in chosen]
    magnitude = np.max([np.abs(np.nan_to_num(a, nan=np.inf)).ravel() for _, a in probe.analytic], axis=0)
    chosen += [int(i) for i in np.argsort(-magnitude, kind="stable")[:TOP]]
    zeros = np.flatnonzero(magnitude == 0)
    if zeros.size:
        chosen += [int(i) for i in rng.choice(zeros, min(ZEROS, zeros.size), replace=False)]
    chosen += [int(i) for i in rng.choice(size, min(samples, size), replace=False)]
    return list(dict.fromkeys(chosen))


def _check(probe: _Probe, base: Trace, flat: list[int], notes: list[str]) -> None:
    f0 = float(base.loss or 0.0)
    try:
        for n, i in enumerate(flat):
            analytic = [(check, float(a.flat[i])) for check, a in probe.analytic]

            def needs_more(est: Estimate) -> bool:
                return any(judge_point(a, est)[2] != "good" for _, a in analytic)

            est = estimate(probe.base, probe.run, probe.seen_by, i, f0, base, needs_more)
            if est is None:
                notes.append(f"{probe.label}: the forced value never reached the layer after it; not checked")
                for check, _ in probe.analytic:
                    check.points.clear()
                return
            index = tuple(int(j) for j in np.unravel_index(i, probe.base.shape))
            for check, a in analytic:
                rel, excess, status = judge_point(a, est)
                check.points.append(Point(index, a, est.numeric, rel, excess, est.spread, est.step, status, est.kink_at))
    finally:
        probe.done()


