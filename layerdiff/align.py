"""Which layer of one side is which layer of the other.

An explicit map first, then equal names, then order and output shape, with the size of the output as a
tie-breaker: two layers of the same shape in the same place whose outputs have about the same norm are the same
layer. A layer present on one side only is left unmatched and listed.

Then values (``fuse``): equal inputs make correct layers produce equal values, so a layer whose output differs from
its partner's but equals that of the partner's unmatched neighbour (a hand-written dense layer with its ReLU inside,
against a ``Linear`` and a separate ``ReLU``) is aligned with the run of layers from its partner to that neighbour,
read as one layer (``Spans``); the layers of the run are listed as fused, not as unmatched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from layerdiff.errors import AlignmentError, term
from layerdiff.metrics import Tolerance, diff, stats_diff
from layerdiff.namemaps import LayerMap, ignored, resolve
from layerdiff.records import LayerInfo, ParamRecord, Recording, RegionRecord, RunInfo, keys_of
from layerdiff.stats import TensorInfo

NAME_BONUS = 10.0
MAP_BONUS = 1000.0
CLOSER = 10.0  # where the inputs already differ, a neighbour this many times closer than the partner is the match


@dataclass
class Alignment:
    pairs: list[tuple[int, int]]  # (index in a, index in b), in execution order; a fused run by its last layer
    only_a: list[str]
    only_b: list[str]
    # Runs of layers aligned as one: the index of the run's last layer -> that of its first, per side.
    fused_a: dict[int, int] = field(default_factory=dict)
    fused_b: dict[int, int] = field(default_factory=dict)


def align(a: Recording, b: Recording, explicit: dict[str, str] | None = None) -> Alignment:
    """Match the layers of ``a`` and ``b``, keeping each side's execution order.

    ``explicit`` may hold patterns, and be a ``namemaps.LayerMap`` with side B's own map and globs of layers to
    leave out (``--ignore``): those are neither paired nor listed as unmatched.

    Raises:
        AlignmentError: no layer could be matched, or the explicit map names a layer that is not there.
    """
    layers_a, layers_b, explicit = _kept(a, b, explicit)
    check_map(explicit, (a.source, [layer.name for layer in layers_a]), (b.source, [layer.name for layer in layers_b]))
    if not explicit and [layer.name for layer in layers_a] == [layer.name for layer in layers_b]:
        pairs = [(x.index, y.index) for x, y in zip(layers_a, layers_b)]
    else:
        pairs = _best_pairs(layers_a, layers_b, explicit)
    for recording in (a, b):
        if not recording.layers:
            raise AlignmentError(
                f"{recording.source} records no layers. Mark values in its forward pass with layerdiff.tap(name, value), "
                "or give a model whose layers layerdiff can see (a torch.nn.Module, a NumPy layer list, a Flax module)."
            )
    if not pairs:
        raise AlignmentError(
            f"Cannot align: only in {a.source}: {', '.join(l.name for l in layers_a)}; only in {b.source}: "
            f"{', '.join(l.name for l in layers_b)}. Rename them, or pass {_map_example()}."
        )
    matched_a = {i for i, _ in pairs}
    matched_b = {j for _, j in pairs}
    return Alignment(
        pairs,
        [l.name for l in layers_a if l.index not in matched_a],
        [l.name for l in layers_b if l.index not in matched_b],
    )


def _kept(a: Recording, b: Recording, explicit: dict[str, str] | None) -> tuple[list[LayerInfo], list[LayerInfo], dict[str, str]]:
    """The layers of each side that take part (those no ignore glob names), and the map with its patterns resolved."""
    given = explicit if isinstance(explicit, LayerMap) else LayerMap(explicit)
    layers_a = [layer for layer in a.layers if not ignored(layer.name, given.ignore)]
    layers_b = [layer for layer in b.layers if not ignored(layer.name, given.ignore)]
    if given.ignore and (not layers_a or not layers_b):
        emptied = a.source if not layers_a else b.source
        raise AlignmentError(f"{term('ignore')} {', '.join(given.ignore)} leaves no layer of {emptied} to compare.")
    resolved = resolve(given, given.backward, [l.name for l in layers_a], [l.name for l in layers_b], "layer")
    return layers_a, layers_b, resolved


def _map_example() -> str:
    return term("layer_map", "A=B", "{'A': 'B'}")


def check_map(explicit: dict[str, str] | None, a: tuple[str, list[str]], b: tuple[str, list[str]]) -> None:
    """Refuse a layer map naming a layer that one side does not have; ``a`` and ``b`` are (source, layer names).

    Raises:
        AlignmentError: naming the layer, the side, and the layers it has.
    """
    for x, y in (explicit or {}).items():
        for (source, names), name in ((a, x), (b, y)):
            if name not in names:
                raise AlignmentError(f"{term('layer_map')} names layer '{name}', which {source} does not have. Its layers: {', '.join(sorted(set(names)))}.")


def _score(x: LayerInfo, y: LayerInfo, explicit: dict[str, str]) -> float | None:
    if x.name in explicit:
        return MAP_BONUS if explicit[x.name] == y.name else None
    if y.name in explicit.values():
        return None
    if x.name == y.name:
        return NAME_BONUS
    ox, oy = x.tensors.get("output"), y.tensors.get("output")
    if ox is None or oy is None or ox.shape != oy.shape:
        return None
    scale = max(ox.norm, oy.norm, 1e-300)
    return 1.0 + max(0.0, 1.0 - abs(ox.norm - oy.norm) / scale)


def _best_pairs(xs: list[LayerInfo], ys: list[LayerInfo], explicit: dict[str, str]) -> list[tuple[int, int]]:
    """The order-keeping matching of highest total score (a sequence alignment with free gaps)."""
    n, m = len(xs), len(ys)
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = best[i], best[i + 1]
        for j in range(m - 1, -1, -1):
            s = _score(xs[i], ys[j], explicit)
            take = below[j + 1] + s if s is not None else float("-inf")
            row[j] = max(take, below[j], row[j + 1])
    pairs = []
    i = j = 0
    while i < n and j < m:
        s = _score(xs[i], ys[j], explicit)
        if s is not None and best[i][j] == best[i + 1][j + 1] + s:
            pairs.append((xs[i].index, ys[j].index))
            i, j = i + 1, j + 1
        elif best[i][j] == best[i + 1][j]:
            i += 1
        else:
            j += 1
    return pairs


def fuse(a: Recording, b: Recording, alignment: Alignment, tolerance: Tolerance) -> Alignment:
    """``alignment`` with each pair whose values differ moved, where the values say so, onto a run of one side's
    unmatched layers next to the partner: up to the neighbour whose output equals this layer's, from the one whose
    input equals this layer's input (within tolerance; or, where the inputs already differ upstream, ``CLOSER``
    times closer than the partner's).

    >>> from layerdiff.records import InMemory, LayerRecord, Trace
    >>> x, y = np.array([[-1.0, 2.0]]), np.array([[0.0, 2.0]])
    >>> loss = LayerRecord("loss", "Loss", {"input": y, "output": np.array(2.0)})
    >>> a = InMemory(Trace([LayerRecord("fc", "Dense", {"input": x, "output": y}), loss], [], None), "a")
    >>> b = InMemory(Trace([LayerRecord("fc", "Linear", {"input": x, "output": x}),
    ...                     LayerRecord("relu", "ReLU", {"input": x, "output": y}), loss], [], None), "b")
    >>> fused = fuse(a, b, align(a, b), Tolerance(("float64", "float64")))
    >>> fused.pairs, fused.fused_b, fused.only_b
    ([(0, 1), (1, 2)], {1: 0}, [])
    """
    # A layer neither paired nor listed was left out (--ignore): it is no part of a run either.
    taken_a = {l.index for l in a.layers if l.name not in alignment.only_a}
    taken_b = {l.index for l in b.layers if l.name not in alignment.only_b}
    pairs, fused_a, fused_b = [], dict(alignment.fused_a), dict(alignment.fused_b)
    for i, j in alignment.pairs:
        found = _run(b, j, _unmatched(b, j, taken_b), lambda k, kind: _distance(a, i, b, k, kind, tolerance))
        if found is not None:
            fused_b[found[1]] = found[0]
            taken_b.update(range(found[0], found[1] + 1))
            j = found[1]
        else:
            found = _run(a, i, _unmatched(a, i, taken_a), lambda k, kind: _distance(a, k, b, j, kind, tolerance))
            if found is not None:
                fused_a[found[1]] = found[0]
                taken_a.update(range(found[0], found[1] + 1))
                i = found[1]
        pairs.append((i, j))
    return Alignment(
        pairs,
        [l.name for l in a.layers if l.name in alignment.only_a and l.index not in taken_a],
        [l.name for l in b.layers if l.name in alignment.only_b and l.index not in taken_b],
        fused_a,
        fused_b,
    )


def _unmatched(r: Recording, at: int, taken: set[int]) -> tuple[list[int], list[int]]:
    """The unmatched layers right before and right after layer ``at`` (never the last, the loss)."""
    free = set(range(len(r.layers) - 1)) - taken
    before: list[int] = []
    after: list[int] = []
    k = at - 1
    while k in free:
        before.insert(0, k)
        k -= 1
    k = at + 1
    while k in free:
        after.append(k)
        k += 1
    return before, after


def _run(
    r: Recording, partner: int, runs: tuple[list[int], list[int]], distance: Callable[[int, str], tuple[bool, float]]
) -> tuple[int, int] | None:
    """The run (first, last) of ``r``'s layers around ``partner`` that the other side's layer is, by value; None
    when the partner alone is as good."""
    before, after = runs
    if not before and not after:
        return None
    same_in, in_rel = distance(partner, "input")
    same_out, out_rel = distance(partner, "output")
    last = partner if same_out else _closest(after, "output", distance, out_rel, upstream=not same_in) or partner
    first = partner if same_in else _closest(before, "input", distance, in_rel, upstream=True) or partner
    return None if (first, last) == (partner, partner) else (first, last)


def _closest(
    candidates: list[int], kind: str, distance: Callable[[int, str], tuple[bool, float]], partner_rel: float, upstream: bool
) -> int | None:
    """The candidate whose ``kind`` tensor agrees with the other side's, or, ``upstream`` (the inputs differ
    already), is ``CLOSER`` times closer than the partner's; None for none."""
    scored = [(distance(k, kind), k) for k in candidates]
    if not scored:
        return None
    (ok, rel), k = min(scored, key=lambda x: x[0][1])
    return k if ok or (upstream and rel * CLOSER < partner_rel) else None


def _distance(a: Recording, i: int, b: Recording, j: int, kind: str, tolerance: Tolerance) -> tuple[bool, float]:
    """Whether the first ``kind`` tensor (``input`` or ``output``) of layer ``i`` of ``a`` and of ``j`` of ``b`` agree,
    and their ``max_rel`` (inf where either lacks it or their shapes differ)."""
    la, lb = a.layers[i], b.layers[j]
    ka, kb = keys_of(la.tensors, kind), keys_of(lb.tensors, kind)
    if not ka or not kb or la.tensors[ka[0]].shape != lb.tensors[kb[0]].shape:
        return False, math.inf
    ia, ib = la.tensors[ka[0]], lb.tensors[kb[0]]
    tol = tolerance.of(la, ka[0])
    if ia.stored and ib.stored:
        d = diff(ka[0], a.tensor(i, ka[0]), b.tensor(j, kb[0]), tol)
    elif ia.sketch and ib.sketch:
        d = stats_diff(ka[0], ia, ib, tol)
    else:
        return False, math.inf
    return d.ok, d.max_rel


def spanned(recording: Recording, runs: dict[int, int]) -> Recording:
    """``recording`` with each run of ``runs`` (last index -> first) read as one layer; itself when there is none."""
    return Spans(recording, runs) if runs else recording


class Spans:
    """A recording whose fused runs read as one layer, at the index of the run's last layer: its name and kind
    joined with ``+``, the inputs and input gradients of the run's first layer, the outputs and output gradients of
    its last, the parameters of all. The layers inside a run stay as they are, aligned with nothing."""

    def __init__(self, recording: Recording, runs: dict[int, int]) -> None:
        self.recording = recording
        self.source = recording.source
        self.runs = runs
        self.layers = [self._merged(l) if l.index in runs else l for l in recording.layers]

    def _merged(self, last: LayerInfo) -> LayerInfo:
        run = self.recording.layers[self.runs[last.index] : last.index + 1]
        tensors = {k: v for k, v in run[0].tensors.items() if _upstream(k)}
        tensors.update({k: v for k, v in last.tensors.items() if not _upstream(k)})
        params = tuple(p for l in run for p in l.params)
        return LayerInfo(last.index, "+".join(l.name for l in run), "+".join(l.kind for l in run), tensors, params)

    def _at(self, index: int, key: str) -> int:
        return self.runs[index] if index in self.runs and _upstream(key) else index

    @property
    def info(self) -> RunInfo:
        return self.recording.info

    @property
    def loss(self) -> float | None:
        return self.recording.loss

    def tensor(self, index: int, key: str) -> np.ndarray:
        return self.recording.tensor(self._at(index, key), key)

    def finite(self, index: int, key: str) -> bool:
        return self.recording.finite(self._at(index, key), key)

    def param(self, name: str) -> ParamRecord:
        return self.recording.param(name)

    def param_grad(self, name: str) -> np.ndarray | None:
        return self.recording.param_grad(name)

    def spec(self, name: str) -> ParamRecord:
        return self.recording.spec(name)

    def param_info(self, name: str) -> TensorInfo | None:
        return self.recording.param_info(name)

    def param_names(self) -> list[str]:
        return self.recording.param_names()

    def regions(self) -> list[RegionRecord]:
        return self.recording.regions()


def _upstream(key: str) -> bool:
    """Whether a tensor key is read at a run's first layer: what enters it forward, what leaves it backward."""
    return key.split(".")[0] in ("input", "grad_input")
