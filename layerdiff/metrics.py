"""How far apart two tensors are, and how far apart they may be: the metrics and the tolerances.

Pure NumPy. An element of ``a`` agrees with ``b`` when ``|a - b| <= tol * (|b| + rms(b))``: relative to the value,
floored at the tensor's RMS so that entries near zero (where float error is absolute, not relative) do not explode.
``max_rel`` is the largest ``|a - b| / (|b| + rms(b))``: the smallest ``tol`` that would have passed the tensor.

``tol`` comes from the noise floor of the computation, not from a constant: ``64 · eps(dtype) · sqrt(n)``, ``n``
the number of values the layer reads (rounding error of a sum grows with the square root of its length). Two sides
that computed below float64 are not judged by it: ``--dtype native`` compares their float64 twins and judges each
side's rounding against its own twin (``twins``, ``precision``).
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from layerdiff.layout import squeezed
from layerdiff.records import LayerInfo
from layerdiff.results import TensorDiff
from layerdiff.stats import TensorInfo, sketch_weight

EPS = {"float64": 2.220446049250313e-16, "float32": 1.1920929e-07, "float16": 9.765625e-04, "bfloat16": 7.8125e-03}
SAFETY = 64.0
NOISE_MARGIN = 4.0


def noise_floor(dtype: str, n: int) -> float:
    """What rounding alone can do to a computation reading ``n`` values in ``dtype``, in units of ``max_rel``.

    >>> f"{noise_floor('float64', 10_000):.1e}"
    '1.4e-12'
    """
    return SAFETY * EPS.get(dtype, EPS["float32"]) * math.sqrt(max(n, 1))


BLOCK = 1 << 16  # elements a tensor is compared in at a time: the temporaries stay in cache, whatever its size
TILE = 256  # columns of a block of a transposed 2-D tensor: both sides read a few cache lines per row


def _blocks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Matching blocks of two arrays of one shape, as views: a transposed weight is read in tiles where it lies,
    not copied whole."""
    if a.ndim > 1 and a.size > BLOCK and not (a.flags.c_contiguous and b.flags.c_contiguous):
        order = sorted(range(a.ndim), key=lambda axis: -abs(a.strides[axis]))  # a's own memory order
        a, b = a.transpose(order), b.transpose(order)
    if a.ndim <= 1 or a.size <= BLOCK or (a.flags.c_contiguous and b.flags.c_contiguous):
        flat_a, flat_b = a.reshape(-1), b.reshape(-1)
        for start in range(0, flat_a.size, BLOCK):
            yield flat_a[start : start + BLOCK], flat_b[start : start + BLOCK]
        return
    if a.ndim > 2:
        for i in range(a.shape[0]):
            yield from _blocks(a[i], b[i])
        return
    rows, cols = a.shape
    width = min(cols, max(TILE, BLOCK // rows))
    height = max(1, BLOCK // width)
    for r in range(0, rows, height):
        for c in range(0, cols, width):
            yield a[r : r + height, c : c + width], b[r : r + height, c : c + width]


def _block_pair(x: np.ndarray, y: np.ndarray, scratch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A block's error ``|x - y|`` (in ``scratch``) and reference ``y``, zero where either side is not finite; and,
    only when some entry is not, where the two sides hold the same NaN or infinity (which agree) or both are finite."""
    x64, y64 = x.astype(np.float64, copy=False), y.astype(np.float64, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: handled below, as agreeing infinities
        d = np.subtract(x64, y64, out=scratch[: x.size].reshape(x.shape))
    if np.isfinite(d).all():  # a NaN or an infinity on either side makes the difference one too
        return np.abs(d, out=d), y64, None
    both, same_special = finite_pair(x64, y64)
    np.copyto(d, 0.0, where=~both)
    return np.abs(d, out=d), np.where(both, y64, 0.0), both | same_special


def diff(key: str, a: np.ndarray, b: np.ndarray, tol: float, floor: float = 0.0) -> TensorDiff:
    """Compare one tensor pair; ``floor`` raises the RMS floor of the denominator (see ``grad_floor``).

    Two passes over blocks of ``BLOCK`` entries (the first for the RMS of ``b``) in two scratch buffers, so that the
    memory it takes does not grow with the tensor, and no large temporary is allocated (and page-faulted) per call.
    A tensor of many blocks has its second half of them compared on the other core (``beside``) while this thread
    compares the first; each block's figures are summed in block order all the same, so that the result is the one
    a single thread gives, to the last bit.

    >>> d = diff("output", np.array([1.0, 2.0]), np.array([1.0, 2.2]), 1e-8)
    >>> d.ok, round(d.max_abs, 3)
    (False, 0.2)
    """
    result = TensorDiff(key, tuple(a.shape), tuple(b.shape), str(a.dtype), str(b.dtype), tol)
    if a.shape != b.shape:
        if a.size != b.size or squeezed(a.shape) != squeezed(b.shape):
            result.ok, result.problem = False, "shape"
            return result
        a = a.reshape(b.shape)  # (1, n) against (n,): nnfs biases
    if a.size == 0:
        return result
    blocks = list(_blocks(a, b))
    halves = [blocks] if len(blocks) < SPLIT else [blocks[: len(blocks) // 2], blocks[len(blocks) // 2 :]]
    sums = [s for part in _on_both(_sums, halves) for s in part]
    sum_ref = sum_err = 0.0
    for err_k, ref_k, nonfinite_k in sums:  # in block order: the same float sums as one pass gives
        sum_err += err_k
        sum_ref += ref_k
        result.nonfinite_mismatch += nonfinite_k
    rms = max(math.sqrt(sum_ref / a.size), floor)
    bad = 0
    for max_abs, max_rel, bad_k in _on_both(lambda part: _errors(part, rms, tol), halves):
        result.max_abs, result.max_rel = max(result.max_abs, max_abs), max(result.max_rel, max_rel)
        bad += bad_k
    norm_b = math.sqrt(sum_ref)
    result.rel_l2 = math.sqrt(sum_err) / norm_b if norm_b > 0 else (0.0 if result.max_abs == 0 else math.inf)
    result.mismatch_fraction = bad / a.size
    result.ok = bad == 0
    if result.nonfinite_mismatch:
        result.problem = "nonfinite"
        result.max_rel = math.inf  # no tolerance passes a NaN against a number
    return result


SPLIT = 4  # blocks from which a tensor is compared on both cores: below, handing half over costs more than it saves
T = TypeVar("T")
_BESIDE: list[ThreadPoolExecutor] = []


def beside(work: Callable[[], T]) -> Future[T]:
    """``work`` started on a thread of its own (one for the process, made when first asked), so that the two cores
    a comparison has both work: NumPy and HDF5's reads release the GIL. Whatever waits for it must not be ``work``
    of its own."""
    if not _BESIDE:
        _BESIDE.append(ThreadPoolExecutor(1, thread_name_prefix="layerdiff-beside"))
    return _BESIDE[0].submit(work)


def _on_both(work: Callable[[list[T]], Any], halves: list[list[T]]) -> list[Any]:
    """``work`` of each half, the second one beside this thread; the results in the halves' order."""
    if len(halves) == 1:
        return [work(halves[0])]
    second = beside(lambda: work(halves[1]))
    first = work(halves[0])
    return [first, second.result()]


def _sums(blocks: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[float, float, int]]:
    """Per block: the sum of squared errors, of squared reference values, and the entries whose NaN or infinity
    the other side does not hold."""
    scratch = np.empty((2, min(max(x.size for x, _ in blocks), BLOCK)))
    found = []
    for x, y in blocks:
        err, ref, agree = _block_pair(x, y, scratch[0])
        nonfinite = 0 if agree is None else int(agree.size - np.count_nonzero(agree))
        found.append((_sum_squares(err, scratch[1]), _sum_squares(ref, scratch[1]), nonfinite))
    return found


def _errors(blocks: list[tuple[np.ndarray, np.ndarray]], rms: float, tol: float) -> tuple[float, float, int]:
    """Over the blocks: the largest error and relative error, and the entries past ``tol``."""
    scratch = np.empty((2, min(max(x.size for x, _ in blocks), BLOCK)))
    max_abs = max_rel = 0.0
    bad = 0
    for x, y in blocks:
        err, ref, agree = _block_pair(x, y, scratch[0])
        max_abs = max(max_abs, float(err.max()))
        if rms > 0:
            rel = np.abs(ref, out=scratch[1][: ref.size].reshape(ref.shape))
            rel += rms
            np.divide(err, rel, out=rel)
        else:
            rel = np.where(err > 0, np.inf, 0.0)
        max_rel = max(max_rel, float(rel.max()))
        bad += int(np.count_nonzero(rel > tol if agree is None else (rel > tol) | ~agree))
    return max_abs, max_rel, bad


def _sum_squares(x: np.ndarray, scratch: np.ndarray) -> float:
    with np.errstate(over="ignore"):  # entries past 1e154 square to inf: the norm is inf, not a warning
        return float(np.square(x, out=scratch[: x.size].reshape(x.shape)).sum())


def stats_diff(key: str, a: TensorInfo, b: TensorInfo, tol: float, floor: float = 0.0) -> TensorDiff:
    """Compare a pair from statistics alone (``stats.statistics``: a stats-only dump keeps no more). Its figures are
    lower bounds: a pair it finds different does differ; one it passes agrees unless the error cancels in the sketch.

    With ``e = a - b`` and ``r`` the sketch's pseudo-random projection, every element within tolerance gives
    ``|<r, e>| <= tol * (<|r|, |b|> + rms(b) * sum |r|)``: ``max_rel`` is ``|<r, e>|`` (less the rounding of the two
    projections) over that bound. Equal hashes are equal tensors.

    >>> from layerdiff.stats import statistics
    >>> x = np.linspace(1.0, 2.0, 1000)
    >>> stats_diff("output", statistics(x), statistics(x), 1e-12).ok, stats_diff("output", statistics(x * 1.001), statistics(x), 1e-8).ok
    (True, False)
    """
    result = TensorDiff(key, a.shape, b.shape, a.dtype, b.dtype, tol, problem="stats")
    n = int(np.prod(b.shape))
    if a.shape != b.shape and (int(np.prod(a.shape)) != n or squeezed(a.shape) != squeezed(b.shape)):
        result.ok, result.problem = False, "shape"
        return result
    if a.sha256 and a.sha256 == b.sha256:
        return result
    if bool(a.finite) != bool(b.finite):
        result.ok, result.problem, result.max_rel, result.max_abs = False, "nonfinite", math.inf, math.inf
        result.nonfinite_mismatch = 1
        return result
    if not a.finite or n == 0:
        return result  # NaN on both sides: whether in the same places, statistics cannot tell
    weight = sketch_weight(n)
    bound = b.sketch[1] + max(b.norm / math.sqrt(n), floor) * weight
    rounding = SAFETY * EPS["float64"] * math.sqrt(n) * (a.sketch[1] + b.sketch[1])
    gap = max(abs(a.sketch[0] - b.sketch[0]) - rounding, 0.0)
    result.max_abs = gap / weight
    result.max_rel = result.rel_l2 = gap / bound if bound > 0 else (math.inf if gap > 0 else 0.0)
    result.ok = result.max_rel <= tol
    result.mismatch_fraction = 0.0 if result.ok else 1.0 / n
    return result


def grad_floor(layer: LayerInfo, param_size: int) -> float:
    """The size a parameter gradient's entries would have without cancellation: a bias before a batch norm has a
    gradient that is exactly zero in exact arithmetic, and two rounding noises must not be compared to each other.

    Each entry sums ``n`` terms of the layer's output gradient, so its scale is ``rms(grad_output) * sqrt(n)``.
    """
    go = layer.tensors.get("grad_output")
    if go is None:
        return 0.0
    size = int(np.prod(go.shape))
    if size == 0:
        return 0.0
    return go.norm / math.sqrt(size) * math.sqrt(max(size / max(param_size, 1), 1.0))


def finite_pair(a64: np.ndarray, b64: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where both sides are finite, and where both hold the same NaN or infinity (which agree)."""
    fin_a, fin_b = np.isfinite(a64), np.isfinite(b64)
    same_special = (np.isnan(a64) & np.isnan(b64)) | (~fin_a & ~fin_b & (a64 == b64))
    return fin_a & fin_b, same_special


def relative(err: np.ndarray, ref: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """``err / (|ref| + max(rms(ref), floor))`` per element: the error ``max_rel`` is the largest of."""
    rms = max(float(np.sqrt(np.mean(ref * ref))), floor)
    return err / (np.abs(ref) + rms) if rms > 0 else np.where(err > 0, np.inf, 0.0)


class Tolerance:
    """Tolerances per tensor: the noise floor of the layer's computation in the coarser of the two sides' dtypes,
    widened by the measured run-to-run noise; or the user's fixed one."""

    def __init__(self, dtypes: tuple[str, str], fixed: float | None = None, run_to_run: float = 0.0) -> None:
        self.dtype = max(dtypes, key=lambda d: EPS.get(d, EPS["float32"]))
        self.fixed = fixed
        self.run_to_run = run_to_run

    def of(self, layer: LayerInfo, key: str) -> float:
        """The tolerance of ``layer``'s tensor ``key`` (``"param"`` for its parameter gradients)."""
        if self.fixed is not None:
            return self.fixed
        source = layer.tensors.get("input") or layer.tensors.get(key) or next(iter(layer.tensors.values()))
        return max(noise_floor(self.dtype, int(np.prod(source.shape))), NOISE_MARGIN * self.run_to_run)
