"""Compare two recordings layer by layer: per tensor errors, a verdict per layer, culprits, first divergences.

Pure NumPy. Tensors are read one pair at a time, so memory does not grow with the number of layers.

An element of ``a`` agrees with ``b`` when ``|a - b| <= tol * (|b| + rms(b))``: relative to the value, floored at
the tensor's RMS so that entries near zero (where float error is absolute, not relative) do not explode.
``max_rel`` is the largest ``|a - b| / (|b| + rms(b))``: the smallest ``tol`` that would have passed the tensor.

``tol`` comes from the noise floor of the computation, not from a constant: ``64 · eps(dtype) · sqrt(n)``, ``n``
the number of values the layer reads (rounding error of a sum grows with the square root of its length), and,
in native precision, at least 4 times the distance between side B and a float64 rerun of side B.
"""

from __future__ import annotations

import math
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np
from deepdiff import DeepDiff

from layerdiff import sync
from layerdiff.align import Alignment, align
from layerdiff.diagnose import Sides, describe
from layerdiff.errors import DumpError, OptionError
from layerdiff.health import nonfinite_origin
from layerdiff.isolate import keys_of
from layerdiff.progress import Progress
from layerdiff.records import LayerInfo, ParamRecord, Recording, TensorInfo, all_finite, sketch_weight, statistics

EPS = {"float64": 2.220446049250313e-16, "float32": 1.1920929e-07, "float16": 9.765625e-04, "bfloat16": 7.8125e-03}
SAFETY = 64.0
NOISE_MARGIN = 4.0
HASHES = ("weights_sha256", "inputs_sha256", "upstream_sha256")
PASS_KINDS = {"forward": ("output",), "backward": ("grad_input", "grad_output")}
MAX_MAPS = 16  # channel maps an error map keeps, the worst first


def noise_floor(dtype: str, n: int) -> float:
    """What rounding alone can do to a computation reading ``n`` values in ``dtype``, in units of ``max_rel``.

    >>> f"{noise_floor('float64', 10_000):.1e}"
    '1.4e-12'
    """
    return SAFETY * EPS.get(dtype, EPS["float32"]) * math.sqrt(max(n, 1))


@dataclass
class TensorDiff:
    key: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    dtype_a: str
    dtype_b: str
    tol: float = 0.0
    max_abs: float = 0.0
    max_rel: float = 0.0
    rel_l2: float = 0.0
    mismatch_fraction: float = 0.0
    nonfinite_mismatch: int = 0
    ok: bool = True
    problem: str = ""  # "shape" or "nonfinite" when no number says it


@dataclass
class LayerDiff:
    layer_a: str
    layer_b: str
    kind_a: str
    kind_b: str
    tensors: list[TensorDiff] = field(default_factory=list)  # cumulative: the plain run
    param_grads: list[TensorDiff] = field(default_factory=list)  # key: "<a's parameter> ~ <b's parameter>"
    local: list[TensorDiff] = field(default_factory=list)  # B's teacher-forced replay against A
    verdict: str = "ok"  # "culprit", "inherited" or "ok"

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tensors + self.param_grads + self.local)

    def worst(self, what: str, local: bool = False) -> TensorDiff | None:
        """The tensor that differs most: ``"forward"`` (outputs), ``"backward"`` (gradients of the input and
        output) or ``"params"`` (parameter gradients); from the teacher-forced replay when ``local``.

        >>> layer = LayerDiff("fc", "fc", "Dense", "Linear", [TensorDiff("output", (2,), (2,), "f8", "f8", max_rel=3.0)])
        >>> layer.worst("forward").max_rel, layer.worst("backward")
        (3.0, None)
        """
        if what == "params":
            found = [t for t in self.local if " ~ " in t.key] if local else self.param_grads
        else:
            kinds = PASS_KINDS[what]
            found = [t for t in (self.local if local else self.tensors) if t.key.split(".")[0] in kinds]
        return max(found, key=lambda t: (not t.ok, t.max_rel)) if found else None

    def verdict_in(self, pass_: str) -> str:
        """The verdict of one pass, ``"forward"`` or ``"backward"`` (parameter gradients included): a layer that is
        a culprit backward only has its forward values right."""
        whats = ("forward",) if pass_ == "forward" else ("backward", "params")
        if any(t is not None and not t.ok for t in (self.worst(w, local=True) for w in whats)):
            return "culprit"
        if all(t is None or t.ok for t in (self.worst(w) for w in whats)):
            return "ok"
        return "differs" if self.verdict == "differs" else "inherited"


@dataclass
class Divergence:
    layer_a: str
    layer_b: str
    tensor: str
    max_abs: float
    max_rel: float
    tol: float
    note: str = ""


@dataclass
class Culprit:
    """A layer wrong given correct inputs."""

    layer_a: str
    layer_b: str
    pass_: str  # "forward", "backward" or "param_grad"
    tensor: str
    max_abs: float
    max_rel: float
    tol: float
    hint: str | None
    # Side A's value and side B's, as compared (B's from the replay): what pictures of the culprit are drawn from.
    values: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)


@dataclass
class Comparison:
    source_a: str
    source_b: str
    layers: list[LayerDiff]
    forward: Divergence | None
    backward: Divergence | None
    culprits: list[Culprit] | None  # None when no replay was possible (two dumps)
    nonfinite: dict[str, dict[str, str | None]]
    only_a: list[str]
    only_b: list[str]
    structure: list[str]
    meta_a: dict[str, Any]
    meta_b: dict[str, Any]
    loss_a: float | None
    loss_b: float | None
    fixed_tol: float | None

    @property
    def match(self) -> bool:
        return self.forward is None and self.backward is None and not self.culprits and all(l.ok for l in self.layers)

    def first_culprit(self, pass_: str) -> Culprit | None:
        passes = ("forward",) if pass_ == "forward" else ("backward", "param_grad")
        return next((c for c in self.culprits or [] if c.pass_ in passes), None)


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
    both, same_special = _finite(x64, y64)
    np.copyto(d, 0.0, where=~both)
    return np.abs(d, out=d), np.where(both, y64, 0.0), both | same_special


def diff(key: str, a: np.ndarray, b: np.ndarray, tol: float, floor: float = 0.0) -> TensorDiff:
    """Compare one tensor pair; ``floor`` raises the RMS floor of the denominator (see ``grad_floor``).

    Two passes over blocks of ``BLOCK`` entries (the first for the RMS of ``b``) in two scratch buffers, so that the
    memory it takes does not grow with the tensor, and no large temporary is allocated (and page-faulted) per call.

    >>> d = diff("output", np.array([1.0, 2.0]), np.array([1.0, 2.2]), 1e-8)
    >>> d.ok, round(d.max_abs, 3)
    (False, 0.2)
    """
    result = TensorDiff(key, tuple(a.shape), tuple(b.shape), str(a.dtype), str(b.dtype), tol)
    if a.shape != b.shape:
        if a.size != b.size or _squeezed(a.shape) != _squeezed(b.shape):
            result.ok, result.problem = False, "shape"
            return result
        a = a.reshape(b.shape)  # (1, n) against (n,): nnfs biases
    if a.size == 0:
        return result
    scratch = np.empty((2, min(a.size, BLOCK)))
    sum_ref = sum_err = 0.0
    for x, y in _blocks(a, b):
        err, ref, agree = _block_pair(x, y, scratch[0])
        sum_err += _sum_squares(err, scratch[1])
        sum_ref += _sum_squares(ref, scratch[1])
        if agree is not None:
            result.nonfinite_mismatch += int(agree.size - np.count_nonzero(agree))
    rms = max(math.sqrt(sum_ref / a.size), floor)
    bad = 0
    for x, y in _blocks(a, b):
        err, ref, agree = _block_pair(x, y, scratch[0])
        result.max_abs = max(result.max_abs, float(err.max()))
        if rms > 0:
            rel = np.abs(ref, out=scratch[1][: ref.size].reshape(ref.shape))
            rel += rms
            np.divide(err, rel, out=rel)
        else:
            rel = np.where(err > 0, np.inf, 0.0)
        result.max_rel = max(result.max_rel, float(rel.max()))
        bad += int(np.count_nonzero(rel > tol if agree is None else (rel > tol) | ~agree))
    norm_b = math.sqrt(sum_ref)
    result.rel_l2 = math.sqrt(sum_err) / norm_b if norm_b > 0 else (0.0 if result.max_abs == 0 else math.inf)
    result.mismatch_fraction = bad / a.size
    result.ok = bad == 0
    if result.nonfinite_mismatch:
        result.problem = "nonfinite"
        result.max_rel = math.inf  # no tolerance passes a NaN against a number
    return result


def _sum_squares(x: np.ndarray, scratch: np.ndarray) -> float:
    with np.errstate(over="ignore"):  # entries past 1e154 square to inf: the norm is inf, not a warning
        return float(np.square(x, out=scratch[: x.size].reshape(x.shape)).sum())


def stats_diff(key: str, a: TensorInfo, b: TensorInfo, tol: float, floor: float = 0.0) -> TensorDiff:
    """Compare a pair from statistics alone (``records.statistics``: a stats-only dump keeps no more). Its figures are
    lower bounds: a pair it finds different does differ; one it passes agrees unless the error cancels in the sketch.

    With ``e = a - b`` and ``r`` the sketch's pseudo-random projection, every element within tolerance gives
    ``|<r, e>| <= tol * (<|r|, |b|> + rms(b) * sum |r|)``: ``max_rel`` is ``|<r, e>|`` (less the rounding of the two
    projections) over that bound. Equal hashes are equal tensors.

    >>> from layerdiff.records import statistics
    >>> x = np.linspace(1.0, 2.0, 1000)
    >>> stats_diff("output", statistics(x), statistics(x), 1e-12).ok, stats_diff("output", statistics(x * 1.001), statistics(x), 1e-8).ok
    (True, False)
    """
    result = TensorDiff(key, a.shape, b.shape, a.dtype, b.dtype, tol, problem="stats")
    n = int(np.prod(b.shape))
    if a.shape != b.shape and (int(np.prod(a.shape)) != n or _squeezed(a.shape) != _squeezed(b.shape)):
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


def _pair(key: str, a: Recording, i: int, b: Recording, j: int, tol: float) -> TensorDiff:
    """One tensor of layer ``i`` of ``a`` against the same of layer ``j`` of ``b``: from their values when both are
    stored, from statistics when either is not."""
    ia, ib = a.layers[i].tensors[key], b.layers[j].tensors[key]
    if ia.stored and ib.stored:
        return diff(key, a.tensor(i, key), b.tensor(j, key), tol)
    return stats_diff(key, _stats(ia, a, i, key), _stats(ib, b, j, key), tol)


def _stats(info: TensorInfo, r: Recording, index: int, key: str) -> TensorInfo:
    """A tensor's full statistics: as recorded, or made from its values (which ``Recording`` hands out in PyTorch's order)."""
    return info if info.sketch else statistics(r.tensor(index, key))


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


def _finite(a64: np.ndarray, b64: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where both sides are finite, and where both hold the same NaN or infinity (which agree)."""
    fin_a, fin_b = np.isfinite(a64), np.isfinite(b64)
    same_special = (np.isnan(a64) & np.isnan(b64)) | (~fin_a & ~fin_b & (a64 == b64))
    return fin_a & fin_b, same_special


def _relative(err: np.ndarray, ref: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """``err / (|ref| + max(rms(ref), floor))`` per element: the error ``max_rel`` is the largest of."""
    rms = max(float(np.sqrt(np.mean(ref * ref))), floor)
    return err / (np.abs(ref) + rms) if rms > 0 else np.where(err > 0, np.inf, 0.0)


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
    both, same_special = _finite(a64, b64)
    rel = np.where(both | same_special, _relative(np.abs(np.where(both, a64 - b64, 0.0)), np.where(both, b64, 0.0)), np.inf)
    if rel.ndim <= 2:
        return rel.reshape(1, -1, rel.shape[-1] if rel.ndim else 1), [""]
    if rel.ndim == 3:
        return rel.max(axis=0)[None], [""]
    channels = rel.reshape(*rel.shape[:3], -1).max(axis=0)
    order = np.argsort(-channels.reshape(len(channels), -1).max(axis=1), kind="stable")[:MAX_MAPS]
    order.sort()
    return channels[order], [f"channel {c}" for c in order]


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def check_same_run(a: Recording, b: Recording) -> None:
    """Refuse recordings made with different weights, inputs or upstream gradient.

    Raises:
        DumpError: naming each hash that differs and how to make a matching dump.
    """
    differ = [h for h in HASHES if a.meta.get(h) and b.meta.get(h) and a.meta.get(h) != b.meta.get(h)]
    if differ:
        what = ", ".join(h.removesuffix("_sha256") for h in differ)
        script = b.meta.get("script") or "B.py"
        raise DumpError(
            f"{a.source} and {b.source} were made with different {what}, so their layers cannot be compared. "
            f"Make one from the other (`layerdiff dump {script} -o {Path(b.source).stem}-synced.h5 "
            f"--weights-from {getattr(a, 'path', a.source)}`), or pass --force to compare them anyway."
        )


class _Reader:
    """A recording as compare reads it: the layer being compared keeps its tensors until the next one is read (the
    plain and the teacher-forced comparison both read side A's), and whether each tensor read was finite is noted,
    so that finding where NaN or Inf first appears reads no tensor a second time."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.source = recording.source
        self.layers = recording.layers
        self._index = -1
        self._row: dict[str, np.ndarray] = {}
        self._finite: dict[tuple[int, str], bool] = {}  # by (layer index, key), and (-1, name) for parameter gradients

    @property
    def meta(self) -> dict[str, Any]:
        return self.recording.meta

    @property
    def loss(self) -> float | None:
        return self.recording.loss

    def tensor(self, index: int, key: str) -> np.ndarray:
        if index != self._index:
            self._index, self._row = index, {}
        if key not in self._row:
            value = self._row[key] = self.recording.tensor(index, key)
            self._finite[index, key] = all_finite(value)
        return self._row[key]

    def finite(self, index: int, key: str) -> bool:
        noted = self.layers[index].tensors[key].finite
        if noted is not None:
            return noted
        if (index, key) not in self._finite:
            self.tensor(index, key)
        return self._finite[index, key]

    def param(self, name: str) -> ParamRecord:
        return self.recording.param(name)

    def param_grad(self, name: str) -> np.ndarray | None:
        grad = self.recording.param_grad(name)
        if grad is not None:
            self._finite[-1, name] = all_finite(grad)
        return grad

    def spec(self, name: str) -> ParamRecord:
        return self.recording.spec(name)

    def param_info(self, name: str) -> TensorInfo | None:
        info = self.recording.param_info(name)
        if info is not None and info.finite is None and (-1, name) in self._finite:
            return replace(info, finite=self._finite[-1, name])  # the comparison read it already
        return info

    def param_names(self) -> list[str]:
        return self.recording.param_names()


class _Judge:
    """Tolerances per tensor: the noise floor of the layer's computation, or the user's fixed one."""

    def __init__(self, a: Recording, b: Recording, fixed: float | None, reference: Recording | None) -> None:
        dtypes = [str(r.meta.get("compute_dtype", "float64")) for r in (a, b)]
        self.dtype = max(dtypes, key=lambda d: EPS.get(d, EPS["float32"]))
        self.fixed = fixed
        self.b = b
        self.reference = reference
        self.reference_index = {l.name: l.index for l in reference.layers} if reference is not None else {}
        measured = [r.meta.get("run_to_run") for r in (a, b)]
        self.run_to_run = max([float(m) for m in measured if isinstance(m, (int, float))], default=0.0)

    def tol(self, layer: LayerInfo, key: str, side_b: LayerInfo | None = None) -> float:
        if self.fixed is not None:
            return self.fixed
        source = layer.tensors.get("input") or layer.tensors.get(key) or next(iter(layer.tensors.values()))
        tol = max(noise_floor(self.dtype, int(np.prod(source.shape))), NOISE_MARGIN * self.run_to_run)
        if side_b is not None and side_b.name in self.reference_index and self.reference is not None:
            r = self.reference_index[side_b.name]
            if key in self.reference.layers[r].tensors and key in side_b.tensors:
                own = _pair(key, self.b, side_b.index, self.reference, r, math.inf)
                tol = max(tol, NOISE_MARGIN * own.max_rel)
        return tol


def compare(
    a: Recording,
    b: Recording,
    *,
    links: list[sync.WeightLink] | None = None,
    layer_map: dict[str, str] | None = None,
    alignment: Alignment | None = None,
    local: Recording | None = None,
    local_side: str = "b",
    reference: Recording | None = None,
    rtol: float | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Compare two recordings of one iteration, and B's teacher-forced replay when there is one.

    Args:
        a, b: recordings (dumps or in-memory traces) made with the same weights, inputs and upstream gradient.
        links: how ``a``'s parameters map onto ``b``'s; worked out from names, order and layouts when absent.
        layer_map: layer names of ``a`` mapped to layer names of ``b``, overriding alignment.
        alignment: the alignment already made (a replay needs it before the comparison).
        local: one side replayed with the other's values forced at every aligned layer: gives culprits.
        local_side: which side ``local`` replays, ``"b"`` (forced with A's values) or ``"a"``.
        reference: side B rerun in float64, when B ran in a lower precision: its distance to B widens tolerances.
        rtol: a fixed tolerance instead of the noise floor.
        progress: called with ``("compare", layers done, layers)`` as the comparison goes.

    Returns:
        A ``Comparison``: per-layer errors and verdicts, culprits, the first divergence of each pass.

    Raises:
        OptionError: ``rtol`` is not a tolerance above 0 and at most 1 (NaN would pass every tensor).
    """
    if rtol is not None and not 0 < rtol <= 1:
        raise OptionError(f"rtol must be a tolerance above 0 and at most 1, such as 1e-6; got {rtol}.")
    alignment = alignment or align(a, b, layer_map)
    if links is None:
        links = sync.link(_specs(a), _specs(b), {}, a.source, b.source)
    recorded_a, recorded_b = set(a.param_names()), set(b.param_names())
    links = [w for w in links if w.src in recorded_a and w.dst in recorded_b]  # --layers records some parameters only
    a, b = _Reader(a), _Reader(b)
    judge = _Judge(a, b, rtol, reference)
    local_index = {l.name: l.index for l in local.layers} if local is not None else {}
    batch = _batch(a)
    row_links = _links_by_row(a, b, alignment, links)
    layers: list[LayerDiff] = []
    culprits: list[tuple[int, Culprit]] = []
    for n, (i, j) in enumerate(alignment.pairs):
        if progress is not None:
            progress("compare", n, len(alignment.pairs))
        row = len(layers)
        layer = _compare_layer(a, b, i, j, row_links.get(row, []), judge)
        name = (a.layers[i] if local_side == "a" else b.layers[j]).name
        forced_from = b.layers[j] if local_side == "a" else a.layers[i]
        # A layer the replay could not force (a stats-only dump kept none of its values) has no local result.
        if local is not None and name in local_index and all(t.stored for t in forced_from.tensors.values()):
            sides: tuple[tuple[Recording, int], tuple[Recording, int]] = (
                ((local, local_index[name]), (b, j)) if local_side == "a" else ((a, i), (local, local_index[name]))
            )
            for c in _isolate_layer(*sides, row_links.get(row, []), judge, layer, batch):
                culprits.append(_blame_consumer(c, row, alignment, a, b) if c.tensor.startswith("grad_output") else (row, c))
        layer.verdict = "culprit" if not all(t.ok for t in layer.local) else ("ok" if layer.ok else "inherited")
        if local is None and not layer.ok:
            layer.verdict = "differs"
        layers.append(layer)
    if progress is not None:
        progress("compare", len(alignment.pairs), len(alignment.pairs))
    loose = row_links.get(-1, [])
    if loose:  # parameters whose layers are aligned on neither side still get their gradients compared
        layer = LayerDiff("(parameters of no aligned layer)", "", "params", "params")
        layer.param_grads = [_param_diff(a, b, w, judge.tol(a.layers[0], "param"), 0.0) for w in loose]
        layer.verdict = "ok" if layer.ok else ("differs" if local is None else "inherited")
        layers.append(layer)
    forward = sorted((n, c) for n, c in culprits if c.pass_ == "forward")
    backward = sorted(((n, c) for n, c in culprits if c.pass_ != "forward"), key=lambda x: (-x[0], x[1].pass_))
    return Comparison(
        a.source,
        b.source,
        layers,
        _first_forward(layers),
        _first_backward(layers),
        [c for _, c in forward + backward] if local is not None else None,
        {"a": nonfinite_origin(a), "b": nonfinite_origin(b)},
        alignment.only_a,
        alignment.only_b,
        _structure(a, b, alignment),
        a.meta,
        b.meta,
        a.loss,
        b.loss,
        rtol,
    )


def _links_by_row(a: Recording, b: Recording, alignment: Alignment, links: list[sync.WeightLink]) -> dict[int, list[sync.WeightLink]]:
    """Each parameter link goes to the row of its layer on side A, else on side B (a tapped network's parameters
    belong to no tap), else to row -1."""
    row_a = {a.layers[i].name: n for n, (i, _) in enumerate(alignment.pairs)}
    row_b = {b.layers[j].name: n for n, (_, j) in enumerate(alignment.pairs)}
    owner_a = {p: l.name for l in a.layers for p in l.params}
    owner_b = {p: l.name for l in b.layers for p in l.params}
    rows: dict[int, list[sync.WeightLink]] = {}
    for w in links:
        row = row_a.get(owner_a.get(w.src, ""), row_b.get(owner_b.get(w.dst, ""), -1))
        rows.setdefault(row, []).append(w)
    return rows


def _blame_consumer(c: Culprit, row: int, alignment: Alignment, a: Recording, b: Recording) -> tuple[int, Culprit]:
    """A tapped value has no input gradient: a wrong gradient arriving at it comes from the backward of the layer
    that consumes it, the next aligned one."""
    if row + 1 >= len(alignment.pairs):
        return row, c
    i, j = alignment.pairs[row + 1]
    note = f"{c.tensor} of {c.layer_a}"
    return row + 1, replace(c, layer_a=a.layers[i].name, layer_b=b.layers[j].name, tensor=note)


def _param_diff(a: Recording, b: Recording, w: sync.WeightLink, tol: float, floor: float) -> TensorDiff:
    ia, ib = a.param_info(w.src), b.param_info(w.dst)
    key = f"{w.src} ~ {w.dst}"
    if ia is None or ib is None:
        return TensorDiff(key, w.src_shape, w.dst_shape, "", "", tol, ok=ia is None and ib is None, problem="missing gradient")
    if not (ia.stored and ib.stored):
        return stats_diff(key, _grad_stats(ia, a, w.src), _grad_stats(ib, b, w.dst), tol, floor)
    return diff(key, w.view(_grad(a, w.src)), _grad(b, w.dst), tol, floor)


def _grad(r: Recording, name: str) -> np.ndarray:
    grad = r.param_grad(name)
    assert grad is not None  # param_info said there is one
    return grad


def _grad_stats(info: TensorInfo, r: Recording, name: str) -> TensorInfo:
    return info if info.sketch else statistics(_grad(r, name), r.spec(name).layout)


def _specs(r: Recording) -> list[ParamRecord]:
    return [r.spec(name) for name in r.param_names()]


def _batch(a: Recording) -> int | None:
    first = next((l for l in a.layers if "input" in l.tensors), None)
    shape = first.tensors["input"].shape if first is not None else ()
    return int(shape[0]) if shape else None


def _compare_layer(a: Recording, b: Recording, i: int, j: int, links: list[sync.WeightLink], judge: _Judge) -> LayerDiff:
    la, lb = a.layers[i], b.layers[j]
    result = LayerDiff(la.name, lb.name, la.kind, lb.kind)
    for key in la.tensors:
        if key in lb.tensors:
            result.tensors.append(_pair(key, a, i, b, j, judge.tol(la, key, lb)))
    result.param_grads = [
        _param_diff(a, b, w, judge.tol(la, "param"), grad_floor(la, int(np.prod(w.src_shape)))) for w in links
    ]
    return result


def _isolate_layer(
    a: tuple[Recording, int],
    b: tuple[Recording, int],
    links: list[sync.WeightLink],
    judge: _Judge,
    layer: LayerDiff,
    batch: int | None,
) -> list[Culprit]:
    """Local errors of one layer: one side's replayed result against the other side's recorded one."""
    (ra, i), (rb, k) = a, b
    la, lb = ra.layers[i], rb.layers[k]
    both_have = keys_of(la.tensors, "grad_input") and keys_of(lb.tensors, "grad_input")
    found = []
    for pass_, kind in (("forward", "output"), ("backward", "grad_input" if both_have else "grad_output")):
        for key in keys_of(la.tensors, kind):
            if key not in lb.tensors:
                continue
            d = _pair(key, ra, i, rb, k, judge.tol(la, key))
            layer.local.append(d)
            if not d.ok:
                values = None if d.problem == "stats" else (ra.tensor(i, key), rb.tensor(k, key))
                found.append(_culprit(layer, pass_, key, d, values, ra.source, rb.source, batch))
                break
    for link in links:
        if ra.param_info(link.src) is None or rb.param_info(link.dst) is None:
            continue
        d = _param_diff(ra, rb, link, judge.tol(la, "param"), grad_floor(la, int(np.prod(link.src_shape))))
        layer.local.append(d)
        if not d.ok and not any(c.pass_ == "backward" for c in found):
            values = None if d.problem == "stats" else (link.view(_grad(ra, link.src)), _grad(rb, link.dst))
            found.append(_culprit(layer, "param_grad", f"grad of {link.src}", d, values, ra.source, rb.source, batch))
    return found


def _culprit(
    layer: LayerDiff,
    pass_: str,
    key: str,
    d: TensorDiff,
    values: tuple[np.ndarray, np.ndarray] | None,
    src_a: str,
    src_b: str,
    batch: int | None,
) -> Culprit:
    """A culprit, with a hint from its values (none when only statistics were kept)."""
    if values is None:
        return Culprit(layer.layer_a, layer.layer_b, pass_, key, d.max_abs, d.max_rel, d.tol, None)
    va, vb = values
    what = key.replace("grad of ", "gradient of ").replace("grad_input", "input gradient").replace("grad_output", "output gradient")
    sides = Sides(f"{src_a}'s {layer.layer_a} {what}", f"{src_b}'s", batch)
    hint = describe(va, vb.reshape(va.shape) if vb.size == va.size else vb, sides, d.tol)
    return Culprit(layer.layer_a, layer.layer_b, pass_, key, d.max_abs, d.max_rel, d.tol, hint, (va, vb))


def _failing(layer: LayerDiff, prefixes: tuple[str, ...]) -> Divergence | None:
    for t in layer.tensors:
        if t.key.split(".")[0] in prefixes and not t.ok:
            return Divergence(layer.layer_a, layer.layer_b, t.key, t.max_abs, t.max_rel, t.tol, _note(t))
    return None


def _note(t: TensorDiff) -> str:
    if t.problem == "shape":
        return f"shape {t.shape_a} against {t.shape_b}"
    if t.problem == "nonfinite":
        return f"{t.nonfinite_mismatch} NaN/Inf entries on one side only"
    if t.problem == "stats":
        return "from statistics alone (a stats-only dump): the figures are lower bounds"
    if t.key.startswith("input") or t.key == "grad_output":
        return "already different where this layer receives it: the cause is in code between captured layers"
    return ""


def _first_forward(layers: list[LayerDiff]) -> Divergence | None:
    for layer in layers:
        found = _failing(layer, ("input",)) or _failing(layer, ("output",))
        if found:
            return found
    return None


def _first_backward(layers: list[LayerDiff]) -> Divergence | None:
    consumer: LayerDiff | None = None
    for layer in reversed(layers):
        found = _failing(layer, ("grad_output",))
        if found and consumer is not None and not any(t.key.startswith("grad_input") for t in layer.tensors):
            # A tap has no input gradient: what arrives wrong at it was made by the backward of its consumer.
            note = f"its backward hands '{layer.layer_a}' a wrong gradient"
            return Divergence(consumer.layer_a, consumer.layer_b, f"grad_output of {layer.layer_a}", found.max_abs, found.max_rel, found.tol, note)
        found = found or _failing(layer, ("grad_input",))
        if found:
            return found
        bad = next((p for p in layer.param_grads if not p.ok), None)
        if bad:
            return Divergence(layer.layer_a, layer.layer_b, f"grad of {bad.key}", bad.max_abs, bad.max_rel, bad.tol, _note(bad))
        consumer = layer
    return None


def _structure(a: Recording, b: Recording, alignment: Alignment) -> list[str]:
    """Differences of form, reported before any number: settings, hashes, and shapes or dtypes of matched tensors."""
    keys = ("dtype", "seed", *HASHES)
    meta = DeepDiff({k: a.meta.get(k) for k in keys}, {k: b.meta.get(k) for k in keys})
    lines = [
        f"{change.path(output_format='list')[0]}: {change.t1} in {a.source}, {change.t2} in {b.source}"
        for change in meta.tree.get("values_changed", [])
    ]
    dtypes: dict[tuple[str, str], int] = {}
    for i, j in alignment.pairs:
        la, lb = a.layers[i], b.layers[j]
        shapes = DeepDiff(
            {k: list(t.shape) for k, t in la.tensors.items() if k in lb.tensors},
            {k: list(t.shape) for k, t in lb.tensors.items() if k in la.tensors},
        )
        for change in (c for kind in shapes.tree.values() for c in kind):
            key = change.path(output_format="list")[0]
            lines.append(
                f"Layer '{la.name}' {key} has shape {tuple(la.tensors[key].shape)} in {a.source} "
                f"but {tuple(lb.tensors[key].shape)} in {b.source}."
            )
        for k, t in la.tensors.items():
            if k in lb.tensors and t.dtype != lb.tensors[k].dtype:
                dtypes[t.dtype, lb.tensors[k].dtype] = dtypes.get((t.dtype, lb.tensors[k].dtype), 0) + 1
    lines += [f"{n} tensors are {x} in {a.source} but {y} in {b.source}." for (x, y), n in dtypes.items()]
    return sorted(set(lines), key=lines.index)
