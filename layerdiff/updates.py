"""What a training step changed, compared between the two sides: each parameter's update (w_after - w_before), the
optimizer's state by parameter and entry, and the buffers; carried between the sides by the weight mapping.

Pure NumPy. The optimizer is judged on the same footing as a layer in a replay: both sides' optimizers were given
the same gradients (side A's) and, from the second step, the same state, so an update that differs is the
optimizer's own doing. A state entry that differs while every update agrees is not yet a culprit (a different
convention, or a difference a later step shows): it is said, and left out of re-syncing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layerdiff.errors import AlignmentError
from layerdiff.metrics import EPS, diff, noise_floor
from layerdiff.optimizer import Buffer, State, buffer_name
from layerdiff.results import TensorDiff
from layerdiff.step_results import StepCulprit
from layerdiff.sync import WeightLink
from layerdiff import update_hints

TERMS = 64  # values an optimizer's update or state entry is computed from, at most, for its noise floor


@dataclass
class Stepped:
    """What one side's step changed, by that side's names and in its layouts."""

    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]  # what its optimizer was given
    state_before: State
    state: State
    buffers_before: dict[str, Buffer]
    buffers: dict[str, Buffer]
    settings: dict[str, Any]
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # per layer holding a buffer: its input


@dataclass
class Found:
    """One step's comparison of what the step changed."""

    updates: list[TensorDiff]
    state: list[TensorDiff]
    buffers: list[TensorDiff]
    culprits: list[StepCulprit]
    notes: list[str]
    unsynced: set[tuple[str, str]]  # (b's parameter, entry): differing state entries left out of re-syncing


def _tol(x: np.ndarray, y: np.ndarray, n: int) -> float:
    coarser = max((str(np.asarray(v).dtype) for v in (x, y)), key=lambda d: EPS.get(d, EPS["float32"]))
    return noise_floor(coarser, n)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _view(link: WeightLink, value: np.ndarray) -> np.ndarray:
    """A's per-parameter array as B holds it; a value not of the parameter's shape (a step count) as it is."""
    value = np.asarray(value)
    return link.view(value) if value.size == int(np.prod(link.src_shape)) and value.ndim else value


def pair_buffers(a: dict[str, Buffer], b: dict[str, Buffer], links: list[WeightLink], sources: tuple[str, str]) -> list[tuple[str, str]]:
    """Which buffer of A is which of B: the same name in layers the weight mapping pairs, or the same full name.

    Raises:
        AlignmentError: two buffers paired by name whose shapes cannot be the same values.
    """
    layers: dict[str, str] = {}
    for w in links:
        layers.setdefault(w.src.rpartition(".")[0], w.dst.rpartition(".")[0])
    by_key_b = {(x.layer, _key(x.name)): x for x in b.values()}
    pairs = []
    for x in a.values():
        y = by_key_b.get((layers.get(x.layer, x.layer), _key(x.name))) or b.get(x.name)
        if y is None:
            continue
        if x.value.size != y.value.size:
            raise AlignmentError(
                f"Buffer '{x.name}' {x.value.shape} of {sources[0]} cannot be mapped onto '{y.name}' {y.value.shape} "
                f"of {sources[1]}: re-synced steps copy it across. Run with {_free()}, or rename one of them."
            )
        pairs.append((x.name, y.name))
    return pairs


def _key(name: str) -> str:
    return buffer_name(name) or name.rpartition(".")[2]


def _free() -> str:
    from layerdiff.errors import term

    return term("free_running", "", "True")


def carried_state(state: State, links: list[WeightLink], unsynced: set[tuple[str, str]], sources: tuple[str, str]) -> State:
    """A's state as B's optimizer holds it: by B's parameter names, in B's layouts; entries left out of
    re-syncing stay out.

    Raises:
        AlignmentError: an entry shaped like neither its parameter nor a scalar.
    """
    carried: State = {}
    for w in links:
        for entry, value in state.get(w.src, {}).items():
            if (w.dst, entry) in unsynced:
                continue
            if value.ndim and value.size != int(np.prod(w.src_shape)):
                raise AlignmentError(
                    f"The optimizer state '{entry}' of '{w.src}' in {sources[0]} has shape {value.shape}, neither the "
                    f"parameter's {w.src_shape} nor a scalar: it cannot be mapped onto {sources[1]}'s '{w.dst}'. "
                    f"Run with {_free()}."
                )
            carried.setdefault(w.dst, {})[entry] = np.ascontiguousarray(_view(w, value))
    return carried


def compare_step(a: Stepped, b: Stepped, links: list[WeightLink], pairs: list[tuple[str, str]], step: int, sources: tuple[str, str], judge: bool) -> Found:
    """Updates, state and buffers of one step; with ``judge`` (re-synced: the same gradients and state given to
    both) an update that differs makes the optimizer a culprit, and a buffer that differs its layer's."""
    found = Found([], [], [], [], [], set())
    failing: list[tuple[WeightLink, TensorDiff]] = []
    for w in links:
        if w.src not in a.after or w.dst not in b.after:
            continue
        da, db = a.after[w.src] - a.before[w.src], b.after[w.dst] - b.before[w.dst]
        # An update read as w_after - w_before carries the rounding of w itself: the tolerance grows by |w|/|Δw|.
        scale = _rms(b.before[w.dst]) / max(_rms(db), 1e-300)
        d = diff(f"{w.src} ~ {w.dst}", _view(w, da), db, _tol(da, db, TERMS) * max(1.0, scale))
        found.updates.append(d)
        if not d.ok:
            failing.append((w, d))
        found.state += _state_of(a, b, w, found, d.ok)
    found.notes += _kept_apart(a.state, b.state, sources)
    if judge and failing:
        found.culprits.append(_optimizer_culprit(a, b, failing, found.state, step, sources))
    found.buffers, culprit = _buffers(a, b, pairs, step, sources)
    if culprit is not None:
        found.culprits.append(culprit)
    return found


def _state_of(a: Stepped, b: Stepped, w: WeightLink, found: Found, update_ok: bool) -> list[TensorDiff]:
    diffs = []
    sa, sb = a.state.get(w.src, {}), b.state.get(w.dst, {})
    for entry in [e for e in sb if e in sa]:
        x, y = _view(w, sa[entry]), sb[entry]
        d = diff(f"{w.src} ~ {w.dst}: {entry}", x.astype(np.float64), y.astype(np.float64), _tol(x, y, TERMS))
        diffs.append(d)
        if not d.ok and update_ok:
            found.unsynced.add((w.dst, entry))
            found.notes.append(
                f"optimizer state '{entry}' of {w.src} differs (max rel {d.max_rel:.1e}) while its update agrees: "
                "another convention, or a difference a later step shows; it is not re-synced"
            )
    return diffs


def _kept_apart(a: State, b: State, sources: tuple[str, str]) -> list[str]:
    ea = sorted({e for s in a.values() for e in s})
    eb = sorted({e for s in b.values() for e in s})
    if ea == eb or not (ea or eb):
        return []
    return [f"the optimizers keep different state: {sources[0]}: {', '.join(ea) or 'none'}; {sources[1]}: {', '.join(eb) or 'none'}"]


def _optimizer_culprit(
    a: Stepped, b: Stepped, failing: list[tuple[WeightLink, TensorDiff]], state: list[TensorDiff], step: int, sources: tuple[str, str]
) -> StepCulprit:
    w, d = failing[0]
    own = [t for t in state if t.key.startswith(f"{w.src} ~ {w.dst}: ")]
    bad = [t.key.rsplit(": ", 1)[1] for t in own if not t.ok]
    good = [t.key.rsplit(": ", 1)[1] for t in own if t.ok]
    said = "; ".join(x for x in (_listed(bad, "differ"), _listed(good, "agree")) if x)
    hint = update_hints.optimizer(a, b, w, step, sources, bad)
    return StepCulprit(step, "optimizer", w.src, w.dst, "update", d.max_abs, d.max_rel, d.tol, hint, said or "it keeps no state",
                       [x.src for x, _ in failing[1:]])


def _listed(entries: list[str], verb: str) -> str:
    """``exp_avg, step agree``; ``exp_avg differs``."""
    return f"{', '.join(entries)} {verb}{'s' if len(entries) == 1 else ''}" if entries else ""


def _buffers(a: Stepped, b: Stepped, pairs: list[tuple[str, str]], step: int, sources: tuple[str, str]) -> tuple[list[TensorDiff], StepCulprit | None]:
    diffs, bad = [], []
    for x, y in pairs:
        va, vb = a.buffers[x].value, b.buffers[y].value
        n = int(np.prod(np.shape(a.inputs.get(a.buffers[x].layer, va)))) or 1
        d = diff(f"{x} ~ {y}", va.astype(np.float64).reshape(vb.shape), vb.astype(np.float64), _tol(va, vb, n))
        diffs.append(d)
        if not d.ok:
            bad.append((x, y, d))
    if not bad:
        return diffs, None
    x, y, d = bad[0]
    hint = update_hints.buffer(a, b, x, y, sources)
    return diffs, StepCulprit(step, "buffer", x, y, x.rpartition(".")[2], d.max_abs, d.max_rel, d.tol, hint, others=[n for n, _, _ in bad[1:]])
