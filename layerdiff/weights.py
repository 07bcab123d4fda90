"""Each side's own weights, compared (``--weights own``).

Porting a model means converting its checkpoint, and the conversion is a common place for the bug: packed gates in
another order, a kernel's axes swapped, a factor left in. Copying A's weights into B would hide it, so with
``--weights own`` each side keeps the weights its file built or loaded, and each parameter of A is first moved into
B's layout through the mapping a copy would use (``sync``) and compared with B's own. The verdicts, tried in order:

- equal: bitwise; rounded: equal to within the rounding of the coarser precision either side's values carry;
- transposed, permuted: equal once the axes are moved otherwise;
- gates reordered: equal once the equal blocks along the first or last axis (the packed gates of a recurrent layer)
  are put in another order;
- scaled: a constant multiple (a factor left in; -1 is a flipped sign);
- different: none of these.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from layerdiff.metrics import EPS, diff
from layerdiff.records import ParamRecord
from layerdiff.results import ParamCheck, WeightCheck, WeightVerdict
from layerdiff.sync import WeightLink

ROUNDING = 4.0  # spacings of the coarser precision within which two values are the same value rounded
FORMATS = ("bfloat16", "float16", "float32")  # coarsest first


def weight_check(src: list[ParamRecord], dst: list[ParamRecord], links: list[WeightLink], source_a: str, source_b: str) -> WeightCheck:
    """Every linked parameter of ``src`` (side A's) against the one of ``dst`` (side B's) it would be copied into.

    >>> from layerdiff.sync import link
    >>> w = np.arange(6.0).reshape(2, 3)
    >>> a, b = [ParamRecord("W", "fc", "in out", w)], [ParamRecord("weight", "fc", "out in", 2 * w.T)]
    >>> weight_check(a, b, link(a, b, {}, "a.py", "b.py"), "a.py", "b.py").params[0].verdict
    'scaled'
    """
    values_a = {p.name: p.value for p in src}
    values_b = {p.name: p.value for p in dst}
    checks = []
    for w in links:
        a, b = np.asarray(w.view(values_a[w.src]), dtype=np.float64), np.asarray(values_b[w.dst], dtype=np.float64)
        tol = ROUNDING * EPS[max(carried(values_a[w.src]), carried(values_b[w.dst]), key=lambda d: EPS[d])]
        verdict, detail, worst = _verdict(a, b, tol)
        checks.append(ParamCheck(w.src, w.dst, verdict, detail, worst))
    return WeightCheck(source_a, source_b, checks)


def equal_links(links: list[WeightLink], check: WeightCheck) -> list[WeightLink]:
    """The links whose two values are the same to within rounding: the run gives B A's value there, so that rounding
    in a conversion is not taken for a bug in the code."""
    same = {(p.a, p.b) for p in check.params if p.ok}
    return [w for w in links if (w.src, w.dst) in same]


def describe(p: ParamCheck, check: WeightCheck) -> str:
    """One parameter's verdict as a sentence, in the sides' terms.

    >>> describe(ParamCheck("W", "weight", "transposed", "", 1.0), WeightCheck("a.py", "b.py", []))
    "b.py's weight is a.py's W transposed"
    """
    mine, theirs = f"{check.source_b}'s {p.b}", f"{check.source_a}'s {p.a}"
    detail = f" ({p.detail})" if p.detail else ""
    said = {
        "equal": f"{mine} is {theirs}",
        "rounded": f"{mine} is {theirs} rounded{detail}",
        "transposed": f"{mine} is {theirs} transposed",
        "permuted": f"{mine} is {theirs} with its axes permuted{detail}",
        "gates reordered": f"{mine} is {theirs} with its gate blocks in another order{detail}",
        "scaled": f"{mine} is {theirs} scaled{detail}",
        "different": f"{mine} differs from {theirs}{detail}",
    }
    return said[p.verdict]


def carried(value: np.ndarray) -> str:
    """The coarsest precision that holds every value exactly: the precision the values were stored in, whatever the
    array's dtype now (a bfloat16 checkpoint cast to float64 still carries 8 bits). An array of n values that is not
    stored so carries fewer bits by chance with probability about 2^(-13 n) (or 0 when all are zeros).

    >>> carried(np.array([0.1, 0.2])), carried(np.array([0.1, 0.2], dtype=np.float32)), carried(np.array([1.5, -3.0]))
    ('float64', 'float32', 'bfloat16')
    """
    x = np.asarray(value)
    if not np.issubdtype(x.dtype, np.floating) or x.size == 0 or not np.isfinite(x).all():
        return str(x.dtype) if str(x.dtype) in EPS else "float64"
    x64 = x.astype(np.float64)
    for name in FORMATS:
        if EPS[name] >= EPS.get(str(x.dtype), 0.0) and _holds(x64, name):
            return name
    return str(x.dtype) if str(x.dtype) in EPS else "float64"


def _holds(x: np.ndarray, name: str) -> bool:
    if name == "float16":
        return bool(np.all(np.abs(x) <= 65504)) and np.array_equal(x.astype(np.float16).astype(np.float64), x)
    if not (np.all(np.abs(x) <= 3.4e38) and np.array_equal(x.astype(np.float32).astype(np.float64), x)):
        return False
    # bfloat16 is float32's upper half: its values are the float32 values whose lower 16 bits are zero.
    return name == "float32" or not np.any(x.astype(np.float32).view(np.uint32) & 0xFFFF)


def _verdict(a: np.ndarray, b: np.ndarray, tol: float) -> tuple[WeightVerdict, str, float]:
    if a.shape != b.shape:
        return "different", f"shape {a.shape} against {b.shape}", float("inf")
    if np.array_equal(a, b):
        return "equal", "", 0.0
    worst = diff("weight", b, a, tol)
    if worst.ok:
        return "rounded", f"to within rounding, max rel {worst.max_rel:.1e}", worst.max_rel
    for found in (_permuted(a, b, tol), _gates(a, b, tol), _scaled(a, b, tol)):
        if found is not None:
            return found[0], found[1], worst.max_rel
    return "different", f"max rel {worst.max_rel:.1e}", worst.max_rel


def _same(x: np.ndarray, y: np.ndarray, tol: float) -> bool:
    return x.shape == y.shape and diff("weight", y, x, tol).ok


def _permuted(a: np.ndarray, b: np.ndarray, tol: float) -> tuple[WeightVerdict, str] | None:
    for axes in permutations(range(a.ndim)):
        if axes != tuple(range(a.ndim)) and _same(a.transpose(axes), b, tol):
            return ("transposed", "") if a.ndim == 2 else ("permuted", f"axes {axes}")
    return None


def _gates(a: np.ndarray, b: np.ndarray, tol: float) -> tuple[WeightVerdict, str] | None:
    """Blocks of an axis in another order: the packed gates of an LSTM (4) or GRU (3), or halves (2)."""
    for axis in sorted({0, a.ndim - 1}):
        for k in (4, 3, 2):
            if a.shape[axis] % k or a.shape[axis] < k:
                continue
            blocks_a, blocks_b = np.split(a, k, axis), np.split(b, k, axis)
            order = [next((i for i, x in enumerate(blocks_a) if _same(x, y, tol)), -1) for y in blocks_b]
            if -1 not in order and sorted(order) == list(range(k)) and order != list(range(k)):
                return "gates reordered", f"its {k} blocks along axis {axis} are a's {' '.join(map(str, order))}"
    return None


def _scaled(a: np.ndarray, b: np.ndarray, tol: float) -> tuple[WeightVerdict, str] | None:
    norm = float(np.vdot(a, a))
    if norm == 0:
        return None
    factor = float(np.vdot(a, b)) / norm
    if abs(factor - 1) > tol and factor != 0 and _same(factor * a, b, 2 * tol):
        return "scaled", f"by {factor:.6g}"
    return None
