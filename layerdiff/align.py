"""Which layer of one side is which layer of the other.

An explicit map first, then equal names, then order and output shape, with the size of the output as a
tie-breaker: two layers of the same shape in the same place whose outputs have about the same norm are the same
layer. A layer present on one side only (a separate ReLU against a fused dense+ReLU) is left unmatched and listed.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerdiff.errors import AlignmentError, term
from layerdiff.patterns import LayerMap, ignored, resolve
from layerdiff.records import LayerInfo, Recording

NAME_BONUS = 10.0
MAP_BONUS = 1000.0


@dataclass
class Alignment:
    pairs: list[tuple[int, int]]  # (index in a, index in b), in execution order
    only_a: list[str]
    only_b: list[str]


def align(a: Recording, b: Recording, explicit: dict[str, str] | None = None) -> Alignment:
    """Match the layers of ``a`` and ``b``, keeping each side's execution order.

    ``explicit`` may hold patterns, and be a ``patterns.LayerMap`` with side B's own map and globs of layers to
    leave out (``--ignore``): those are neither paired nor listed as unmatched.

    Raises:
        AlignmentError: no layer could be matched, or the explicit map names a layer that is not there.
    """
    layers_a, layers_b, explicit = _kept(a, b, explicit)
    names_a = {layer.name for layer in layers_a}
    names_b = {layer.name for layer in layers_b}
    for x, y in explicit.items():
        if x not in names_a or y not in names_b:
            side, name, names = (a.source, x, names_a) if x not in names_a else (b.source, y, names_b)
            raise AlignmentError(f"{term('layer_map')} names layer '{name}', which {side} does not have. Its layers: {', '.join(sorted(names))}.")
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
