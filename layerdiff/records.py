"""What one forward and backward pass leaves behind: plain NumPy arrays in small dataclasses.

Adapters produce a ``Trace``; the store writes it; compare reads it back (or takes it straight from memory).
Tensor keys of a layer: ``input``, ``output``, ``grad_input``, ``grad_output``; a layer with several inputs or
outputs has ``input.1``, ``grad_input.1``… after the first.

A tensor is kept as its framework made it. One laid out otherwise than PyTorch (channels-last ``"N H W C"``) has
its layout recorded, and a ``Recording`` hands it out, with its shape, in PyTorch's order: what reads recordings
(align, compare, isolate, diagnose) never sees a layout.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any, Callable, Iterator, Protocol

import numpy as np

# PyTorch's order. Recordings hand out every tensor in it; dumps of any framework hash their weights in it.
CANONICAL_AXES = ("out", "in", "O", "I", "N", "C", "D", "H", "W")


def axes_of(layout: str) -> list[str]:
    """The axis names of a layout. A trailing ``?`` marks a layout an adapter guessed, which shapes may overrule.

    >>> axes_of("in out?")
    ['in', 'out']
    """
    return layout.replace("?", "").split()


def is_guess(layout: str) -> bool:
    return layout.endswith("?")


def _to_canonical(layout: str, ndim: int) -> tuple[int, ...] | None:
    """The transpose from ``layout`` to PyTorch's order; None when there is none, or the layout does not fit ``ndim``."""
    axes = axes_of(layout)
    if len(axes) != ndim:
        return None
    rank = {a: CANONICAL_AXES.index(a) if a in CANONICAL_AXES else len(CANONICAL_AXES) + i for i, a in enumerate(axes)}
    order = tuple(sorted(range(ndim), key=lambda i: rank[axes[i]]))
    return None if order == tuple(range(ndim)) else order


def canonical(value: np.ndarray, layout: str) -> np.ndarray:
    """``value``, whose axes ``layout`` names, in PyTorch's order (as it is when the layout does not fit).

    >>> canonical(np.zeros((4, 8, 8, 3)), "N H W C").shape
    (4, 3, 8, 8)
    """
    order = _to_canonical(layout, value.ndim)
    return value if order is None else value.transpose(order)


def from_canonical(value: np.ndarray, layout: str) -> np.ndarray:
    """The inverse of ``canonical``: a tensor in PyTorch's order, laid out as ``layout`` says."""
    order = _to_canonical(layout, value.ndim)
    return value if order is None else value.transpose(np.argsort(order))


def canonical_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    order = _to_canonical(layout, len(shape))
    return tuple(shape) if order is None else tuple(shape[i] for i in order)


def tensor_key(kind: str, index: int) -> str:
    return kind if index == 0 else f"{kind}.{index}"


def key_order(key: str) -> tuple[int, int]:
    """Sorts tensor keys as a layer runs: inputs, outputs, then the gradients."""
    kind, _, index = key.partition(".")
    order = ("input", "output", "grad_output", "grad_input")
    return (order.index(kind) if kind in order else len(order), int(index or 0))


@dataclass
class LayerRecord:
    """One layer call. ``layouts`` names the axes of tensors not in PyTorch's order (``{"output": "N H W C"}``)."""

    name: str
    kind: str
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    params: list[str] = field(default_factory=list)
    layouts: dict[str, str] = field(default_factory=dict)


@dataclass
class ParamRecord:
    """A parameter as its framework holds it; ``layout`` names its axes (``"in out"``, ``"O I H W"``)."""

    name: str
    layer: str
    layout: str
    value: np.ndarray
    grad: np.ndarray | None = None


@dataclass
class Trace:
    """One iteration of one implementation, in execution order."""

    layers: list[LayerRecord]
    params: list[ParamRecord]
    loss: float | None
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: list[np.ndarray] = field(default_factory=list)
    targets: np.ndarray | None = None
    upstream: list[np.ndarray] = field(default_factory=list)  # empty when the model has a loss


def all_finite(value: np.ndarray) -> bool:
    """Whether every entry is finite, in one summing pass without a temporary as large as ``value``.

    >>> all_finite(np.array([1.0, 2.0])), all_finite(np.array([1.0, np.inf]))
    (True, False)
    """
    if not np.issubdtype(value.dtype, np.inexact):
        return True
    with np.errstate(all="ignore"):
        total = value.sum()  # NaN or infinite when any entry is (or, rarely, when finite entries overflow)
    return bool(np.isfinite(total)) or bool(np.isfinite(value).all())


def owned(p: ParamRecord, layers: Callable[[str], bool]) -> bool:
    """Whether a parameter belongs to one of ``layers``: its module's, or (in a tapped network) its name's prefix."""
    return layers(p.layer) or layers(p.name.rpartition(".")[0])


def select(trace: Trace, globs: list[str]) -> Trace:
    """``trace`` with only the layers whose names match one of ``globs`` (``fnmatch``), and their parameters.

    >>> t = Trace([LayerRecord("fc1", "Linear"), LayerRecord("relu1", "ReLU")], [], None)
    >>> [r.name for r in select(t, ["fc*"]).layers]
    ['fc1']
    """

    def chosen(name: str) -> bool:
        return any(fnmatchcase(name, g) for g in globs)

    return replace(trace, layers=[r for r in trace.layers if chosen(r.name)], params=[p for p in trace.params if owned(p, chosen)])


def placeholder(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A read-only array of ``shape`` and ``dtype`` that takes no memory: a parameter's form, without its values."""
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


def unique_name(name: str, taken: Any) -> str:
    """``name``, or ``name#2``, ``name#3``… for the second and later calls of one layer."""
    if name not in taken:
        return name
    n = 2
    while f"{name}#{n}" in taken:
        n += 1
    return f"{name}#{n}"


def snapshot(value: Any) -> np.ndarray:
    """A private copy: hand-written layers reuse and mutate their arrays after returning them."""
    return np.array(value, copy=True)


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str
    norm: float  # of the finite entries: alignment tells layers apart by it without reading the tensor
    mean: float
    layout: str = ""  # the axes it was recorded in, when not PyTorch's order (``shape`` is in PyTorch's order)
    stored: bool = True  # False: a stats-only dump kept the statistics below, not the values
    sha256: str = ""  # with the sketch, from ``statistics``: every entry read, in PyTorch's order
    sketch: tuple[float, ...] = ()  # (<r, x>, <|r|, |x|>): see ``statistics``
    finite: bool | None = None  # whether every entry is; None: not recorded (schema 1), read the tensor to know


@dataclass(frozen=True)
class LayerInfo:
    index: int
    name: str
    kind: str
    tensors: dict[str, TensorInfo]
    params: tuple[str, ...]


SUMMARY_SAMPLE = 1 << 14
SUMMARY_RUN = 1 << 10


def summarize(a: np.ndarray, layout: str = "") -> TensorInfo:
    """Shape (in PyTorch's order), dtype and the RMS-derived norm and mean of (a sample of) the finite entries.

    The statistics only tell layers apart for alignment, so a sample of 16,384 entries is enough: 16 runs of 1,024
    contiguous entries spread evenly over a large tensor, so that it reads 128 KB of it, not every cache line (as
    an evenly strided sample would) and writing a dump keeps the speed of the disk.
    """
    shape = canonical_shape(tuple(a.shape), layout)
    flat = a.reshape(-1) if a.flags.c_contiguous or a.size <= SUMMARY_SAMPLE else None
    if flat is None:  # a view in another order: a strided sample, not a copy of the whole
        step = max(1, int((a.size / SUMMARY_SAMPLE) ** (1 / a.ndim)))
        sample = a[(slice(None, None, step),) * a.ndim].reshape(-1).astype(np.float64)
    elif flat.size <= SUMMARY_SAMPLE:
        sample = flat.astype(np.float64)
    else:
        starts = np.linspace(0, flat.size - SUMMARY_RUN, SUMMARY_SAMPLE // SUMMARY_RUN).astype(np.int64)
        sample = np.concatenate([flat[s : s + SUMMARY_RUN] for s in starts.tolist()]).astype(np.float64, copy=False)
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return TensorInfo(shape, str(a.dtype), 0.0, 0.0, layout)
    rms = float(np.sqrt(np.mean(sample * sample)))
    return TensorInfo(shape, str(a.dtype), rms * float(np.sqrt(a.size)), float(sample.mean()), layout)


SKETCH_PERIOD = 65521  # a prime: the projection does not repeat in step with a tensor's rows
_SKETCH = np.random.default_rng(0x1A7E4D1FF).standard_normal(2 * SKETCH_PERIOD)
_SKETCH[SKETCH_PERIOD:] = _SKETCH[:SKETCH_PERIOD]
_SKETCH_ABS = np.abs(_SKETCH)
_SKETCH_CUMSUM = np.concatenate([[0.0], np.cumsum(_SKETCH_ABS[:SKETCH_PERIOD])])


def sketch_weight(n: int) -> float:
    """``sum |r_i|`` over the first ``n`` entries of the projection ``statistics`` uses."""
    return float((n // SKETCH_PERIOD) * _SKETCH_CUMSUM[-1] + _SKETCH_CUMSUM[n % SKETCH_PERIOD])


def flat_chunks(a: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """``a``'s entries in C order as contiguous float64 pieces of at most ``size``, copying a block of rows at a
    time where ``a`` is a transposed view, never the whole."""
    a = a.reshape(1) if a.ndim == 0 else a
    if a.dtype == np.float64 and a.flags.c_contiguous:
        flat = a.reshape(-1)
        for start in range(0, flat.size, size):
            yield flat[start : start + size]
        return
    rows = max(1, size // max(1, a.size // max(1, a.shape[0])))
    for start in range(0, a.shape[0], rows):
        block = np.ascontiguousarray(a[start : start + rows], dtype=np.float64).reshape(-1)
        for first in range(0, block.size, size):
            yield block[first : first + size]


def statistics(a: np.ndarray, layout: str = "") -> TensorInfo:
    """Everything a stats-only dump keeps of a tensor, from every entry in PyTorch's order: the exact norm and mean,
    a SHA-256 of its float64 values, and a sketch: its projection ``<r, x>`` on a fixed pseudo-random vector and
    ``<|r|, |x|>``, from which ``compare`` bounds the error of two tensors it cannot read (see ``stats_diff``).

    >>> info = statistics(np.ones(3))
    >>> info.norm, info.finite, len(info.sha256)
    (1.7320508075688772, True, 64)
    """
    x = canonical(a, layout)
    shape = tuple(x.shape)
    digest = hashlib.sha256(repr(tuple(x.shape) or (1,)).encode())
    s = t = squares = total = 0.0
    offset = 0
    with np.errstate(all="ignore"):
        for chunk in flat_chunks(x, SKETCH_PERIOD):
            digest.update(chunk.data)
            at = offset % SKETCH_PERIOD
            s += float(chunk @ _SKETCH[at : at + chunk.size])
            t += float(np.abs(chunk) @ _SKETCH_ABS[at : at + chunk.size])
            squares += float(chunk @ chunk)
            total += float(chunk.sum())
            offset += chunk.size
    finite = bool(np.isfinite(s) and np.isfinite(t))
    if not finite:  # the norm and mean of the finite entries, as ``summarize`` gives them
        kept = x[np.isfinite(x)].astype(np.float64)
        squares, total = float(kept @ kept), float(kept.sum())
    n = max(offset, 1)
    return TensorInfo(shape, str(a.dtype), float(np.sqrt(squares)), total / n, layout, True, digest.hexdigest(), (s, t), finite)


class Recording(Protocol):
    """What compare reads, from a dump on disk (``store.Dump``) or a trace in memory (``InMemory``)."""

    source: str
    layers: list[LayerInfo]

    @property
    def meta(self) -> dict[str, Any]: ...

    @property
    def loss(self) -> float | None: ...

    def tensor(self, index: int, key: str) -> np.ndarray:
        """The tensor in PyTorch's axis order."""

    def param(self, name: str) -> ParamRecord: ...

    def param_grad(self, name: str) -> np.ndarray | None:
        """The gradient alone: reading it does not read the value."""

    def spec(self, name: str) -> ParamRecord:
        """Name, layer, layout, shape and dtype, without reading anything (``value`` may be a placeholder)."""

    def finite(self, index: int, key: str) -> bool:
        """Whether every entry of a layer's tensor is finite: from what the recording noted, else by reading it."""

    def param_info(self, name: str) -> TensorInfo | None:
        """The gradient's statistics (``stored`` False when only they were kept); None without a gradient."""

    def param_names(self) -> list[str]: ...


class InMemory:
    """A trace read as a recording, for comparisons that write no dump."""

    def __init__(self, trace: Trace, source: str) -> None:
        self.trace = trace
        self.source = source
        self.layers = [
            LayerInfo(i, r.name, r.kind, {k: summarize(v, r.layouts.get(k, "")) for k, v in r.tensors.items()}, tuple(r.params))
            for i, r in enumerate(trace.layers)
        ]
        self._params = {p.name: p for p in trace.params}

    @property
    def meta(self) -> dict[str, Any]:
        return self.trace.meta

    @property
    def loss(self) -> float | None:
        return self.trace.loss

    def tensor(self, index: int, key: str) -> np.ndarray:
        record = self.trace.layers[index]
        return canonical(record.tensors[key], record.layouts.get(key, ""))

    def param(self, name: str) -> ParamRecord:
        return self._params[name]

    def param_grad(self, name: str) -> np.ndarray | None:
        return self._params[name].grad

    def spec(self, name: str) -> ParamRecord:
        return self._params[name]

    def param_info(self, name: str) -> TensorInfo | None:
        p = self._params[name]
        return None if p.grad is None else replace(summarize(p.grad, p.layout), finite=all_finite(p.grad))

    def finite(self, index: int, key: str) -> bool:
        return all_finite(self.trace.layers[index].tensors[key])

    def param_names(self) -> list[str]:
        return list(self._params)
