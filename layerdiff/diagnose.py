"""What a difference looks like, in the user's terms: the first pattern (``patterns``) whose evidence holds, as a
sentence; and where in the tensor the two differ.

``describe(a, b)`` compares a culprit's value on side A with side B's value computed from the same inputs, and
returns one sentence, or None when no simple pattern explains the difference. ``error_map`` gives the maps of the
relative error that the HTML report draws.
"""

from __future__ import annotations

import numpy as np

from layerdiff.metrics import finite_pair, relative
from layerdiff import patterns as p
from layerdiff import spatial
from layerdiff.patterns import FIT, Case, Hypothesis, Sides, spatial_axes

__all__ = ["Sides", "describe", "error_map", "hints", "spatial_axes"]


HYPOTHESES: list[Hypothesis] = [
    Hypothesis("permuted", "the shapes differ, and a with its axes permuted equals b (residual within the noise floor, "
               "SHARE of |b|²)", p.permuted, on="shapes"),
    Hypothesis("nonfinite", "NaN/Inf on one side where the other is finite", p.nonfinite, on="any"),
    Hypothesis("zeros", "one side exactly zero everywhere, the other not", p.zeros),
    Hypothesis("factor", "a = k b, its residual within the noise floor and explaining SHARE of the difference "
               "(or a residual a millionth of it)", p.factor),
    Hypothesis("transposed", "a with two axes swapped (or permuted) equals b, held as the factor", p.transposed),
    Hypothesis("shift", "a - b constant, or constant per feature/channel (2 entries per constant at least; not along "
               "a spatial axis, nor axis 1 of a 3-D tensor that may be positions), held as the factor", p.shift),
    Hypothesis("wrong axis", "each side sums to one (or has mean 0 and variance 1 along an axis of 4 or more) over "
               "axes the other does not", p.wrong_axis),
    Hypothesis("at zeros", "every difference (2 at least) at an exact zero of one side, SHARE of the squared "
               "difference there, and MIN_ENTRIES nonzero entries that agree", p.at_zeros),
    Hypothesis("epsilon", "no exact zero on one side only; per row (a layer norm) or channel (a batch norm), "
               "a - b = u (b - shift) fitted over every entry and explaining SHARE; every u of one sign, at most 10%, "
               "not all equal; each shift inside the values it shifts; 4 entries per fitted number", p.epsilon),
    Hypothesis("triangle", "the last two axes square, 4 or more; every difference in one triangle (filling a whole "
               "diagonal band of it) or on the whole diagonal", spatial.triangle),
    Hypothesis("border", "spatial axes known; every difference within 1 or 2 pixels of the border, the clean "
               "interior as large as the band and MIN_ENTRIES in all", spatial.border),
    Hypothesis("spatial shift", "spatial axes known, 4 pixels or more; a moved by up to 2 pixels equals b within the "
               "noise floor on an overlap of half of each image and MIN_ENTRIES in all, which holds half of the "
               "squared difference", spatial.spatial_shift),
]


def describe(a: np.ndarray, b: np.ndarray, sides: Sides, tol: float) -> str | None:
    """The first hypothesis whose evidence holds, as a sentence.

    Args:
        a, b: the two sides' values, as compared (same shape, or one a permutation of the other's).
        sides: how to name them, the batch size, and which axes are spatial.
        tol: the comparison's relative tolerance; fits are judged to it (at least to ``FIT``).

    Returns:
        One sentence, or None when no hypothesis has the evidence it needs.

    >>> describe(np.array([[1.0, 2.0], [3.0, 4.0]]) * 2, np.array([[1.0, 2.0], [3.0, 4.0]]), Sides("A", "B"), 1e-12)
    'A is 2 × B.'
    """
    return next(iter(hints(a, b, sides, tol, first=True).values()), None)


def hints(a: np.ndarray, b: np.ndarray, sides: Sides, tol: float, *, first: bool = False) -> dict[str, str]:
    """Every hypothesis whose evidence holds, by name, in the order ``describe`` tries them (only the first if
    ``first``).

    >>> x = np.arange(12.0).reshape(3, 4)
    >>> hints(-x, x, Sides("A", "B"), 1e-12)
    {'factor': 'A is B with its sign flipped.'}
    """
    case = Case(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), sides, max(FIT, tol))
    a, b = case.a, case.b
    if a.shape != b.shape:
        tried = {"shapes"}
    elif a.size < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or case.total == 0:
        tried = {"any"}  # one number (a loss) has no pattern to show but NaN/Inf; nor has NaN against NaN
    else:
        tried = {"any", "values"}
    out = {}
    for hypothesis in HYPOTHESES:
        if hypothesis.on not in tried:
            continue
        sentence = hypothesis.test(case)
        if sentence:
            out[hypothesis.name] = sentence
            if first:
                break
    return out


MAX_MAPS = 16  # channel maps an error map keeps, the worst first


def error_map(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Where in the tensor ``a`` and ``b`` differ, as 2-D maps of the relative error (what ``max_rel`` is the max of).

    The leading (batch) axis of a 3-D or 4-D tensor is reduced by its maximum; a 4-D tensor is read as
    ``(N, C, H, W)`` and gives one map per channel, the ``MAX_MAPS`` worst; a 1-D one a single row. An element
    finite on one side only counts as ``inf``.

    Returns:
        ``maps`` of shape ``(k, rows, columns)`` and a label per map (empty for a tensor drawn whole).

    >>> maps, labels = error_map(np.ones((2, 3, 4, 4)), np.ones((2, 3, 4, 4)))
    >>> maps.shape, labels[0]
    ((3, 4, 4), 'channel 0')
    """
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64).reshape(np.shape(a))
    both, same_special = finite_pair(a64, b64)
    rel = np.where(both | same_special, relative(np.abs(np.where(both, a64 - b64, 0.0)), np.where(both, b64, 0.0)), np.inf)
    if rel.ndim <= 2:
        return rel.reshape(1, -1, rel.shape[-1] if rel.ndim else 1), [""]
    if rel.ndim == 3:
        return rel.max(axis=0)[None], [""]
    channels = rel.reshape(*rel.shape[:3], -1).max(axis=0)
    order = np.argsort(-channels.reshape(len(channels), -1).max(axis=1), kind="stable")[:MAX_MAPS]
    order.sort()
    return channels[order], [f"channel {c}" for c in order]
