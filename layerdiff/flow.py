"""How values flow between the aligned rows of a replay, from the values themselves: which rows read a row's
output, whether a row's input was handed on from a row or made by code between them, and that code (a ``Gap``).

In a replay every aligned layer hands on the other side's recorded output, so a later layer whose input holds those
very values (to a cast's rounding) reads that layer; one whose input holds none of them received something made by
code that no layer records. ``blame`` places culprits with these answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from itertools import permutations
from typing import Callable

import numpy as np

from layerdiff.align import Alignment
from layerdiff.metrics import EPS, diff
from layerdiff.records import Recording, keys_of
from layerdiff.results import Gap

WINDOW = 8  # rows after a value that may read it

# A row as the replay ran it (the replay's recording, and the row's layer index there; None: not replayed) and as
# the other side recorded it (whose outputs the replay handed on).
Live = list[tuple[Recording, "int | None"]]
Other = list[tuple[Recording, int]]


@dataclass(frozen=True)
class Flow:
    """What the replay says of how values flow between rows: the code between rows n - 1 and n (``gap_before(0)``:
    before the first); the rows whose input is row n's output (None where no recording says); whether row n's input
    was made by code rather than handed on from a row (None where it records no input)."""

    gap_before: Callable[[int], Gap]
    consumers: Callable[[int], list[int] | None]
    made_by_code: Callable[[int], bool | None]
    rows: int


def plain(a: Recording, b: Recording, alignment: Alignment) -> Flow:
    """How values flow in one side's own recording (B's, or A's where B records no inputs): for the plain
    comparison, which has no replay."""
    rows_b: Live = [(b, j) for _, j in alignment.pairs]
    rows_a: Live = [(a, i) for i, _ in alignment.pairs]
    rows = rows_b if any(keys_of(b.layers[j].tensors, "input") for _, j in alignment.pairs) else rows_a
    own: Other = [(r, k) for r, k in rows if k is not None]
    return Flow(partial(gap_before, a, b, alignment), partial(consumers, rows, own), partial(made_by_code, rows, own), len(rows))


def permuted_equal(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """Whether ``b`` holds ``a``'s values with its axes in another order (a layout change, not a difference).

    >>> x = np.arange(24.0).reshape(2, 3, 4)
    >>> permuted_equal(x, x.transpose(0, 2, 1), 1e-12), permuted_equal(x, x.reshape(2, 4, 3), 1e-12)
    (True, False)
    """
    if a.shape == b.shape or a.size != b.size or a.ndim != b.ndim or a.ndim > 6:
        return False
    for axes in permutations(range(a.ndim)):
        moved = a.transpose(axes)
        if moved.shape == b.shape and diff("input", moved, b, tol).ok:
            return True
    return False


def gap_before(a: Recording, b: Recording, alignment: Alignment, n: int) -> Gap:
    """The code between row ``n - 1`` and row ``n`` of ``alignment`` (before the first row, for 0), with the layers
    each side records there unaligned."""

    def between(r: Recording, fused: dict[int, int], after: int, before: int) -> tuple[str, ...]:
        inner = {k for last, first in fused.items() for k in range(first, last)}
        start = fused.get(before, before)
        return tuple(r.layers[k].name for k in range(after + 1, start) if k not in inner)

    i, j = alignment.pairs[n]
    if n == 0:
        return Gap(("inputs", "inputs"), (a.layers[i].name, b.layers[j].name))
    pi, pj = alignment.pairs[n - 1]
    return Gap(
        (a.layers[pi].name, b.layers[pj].name),
        (a.layers[i].name, b.layers[j].name),
        between(a, alignment.fused_a, pi, i),
        between(b, alignment.fused_b, pj, j),
    )


def consumers(
    live: Live, other: Other, n: int, window: int = WINDOW
) -> list[int] | None:
    """The rows after row ``n`` whose input in the replay is row ``n``'s forced output (the other side's), by
    value; None when none of those rows records an input."""
    forced = _forced_output(other, n)
    if forced is None:
        return None
    found, known = [], False
    for m in range(n + 1, min(n + 1 + window, len(live))):
        inputs = _inputs(live, m)
        known = known or bool(inputs)
        if any(_holds(x, forced) for x in inputs):
            found.append(m)
    return found if known else None


def made_by_code(live: Live, other: Other, m: int, window: int = WINDOW) -> bool | None:
    """Whether row ``m``'s input in the replay was made by code: it is none of the forced outputs of the rows before
    it (the network's inputs, for the first); None when the row records no input."""
    inputs = _inputs(live, m)
    if not inputs:
        return None
    handed = [v for k in range(max(m - window, 0), m) if (v := _forced_output(other, k)) is not None]
    return not all(any(_holds(x, v) for v in handed) for x in inputs) if m > 0 else False


def _forced_output(other: Other, n: int) -> np.ndarray | None:
    source, index = other[n]
    info = source.layers[index].tensors.get("output")
    return source.tensor(index, "output") if info is not None and info.stored else None


def _inputs(live: Live, m: int) -> list[np.ndarray]:
    recording, k = live[m]
    if k is None:
        return []
    return [recording.tensor(k, key) for key in keys_of(recording.layers[k].tensors, "input") if recording.layers[k].tensors[key].stored]


def _holds(value: np.ndarray, forced: np.ndarray) -> bool:
    """Whether a value in the replay is a forced one, handed on (cast to its dtype at most)."""
    eps = 8 * EPS.get(str(value.dtype), EPS["float32"])
    return value.shape == forced.shape and bool(np.all(np.abs(value - forced) <= eps * np.abs(forced)))
