"""What is known of a tensor without reading it again: summaries, sketches and hashes.

``summarize`` samples a tensor for its norm and mean (alignment tells layers apart by them); ``statistics`` reads
every entry for the exact norm and mean, a SHA-256 and a sketch from which ``metrics.stats_diff`` bounds the error
of two tensors a stats-only dump did not keep. ``digest`` and ``fingerprint`` hash inputs and weights the same way
for every framework and layout.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from layerdiff.layout import canonical, canonical_shape, squeezed


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
    digest_ = hashlib.sha256(repr(tuple(x.shape) or (1,)).encode())
    s = t = squares = total = 0.0
    offset = 0
    with np.errstate(all="ignore"):
        for chunk in flat_chunks(x, SKETCH_PERIOD):
            digest_.update(chunk.data)
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
    return TensorInfo(shape, str(a.dtype), float(np.sqrt(squares)), total / n, layout, True, digest_.hexdigest(), (s, t), finite)


def digest(arrays: Iterable[np.ndarray]) -> str:
    """SHA-256 of the arrays as contiguous float64, in their axis order (a transposed view is not copied whole)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(repr(a.shape or (1,)).encode())
        for chunk in flat_chunks(a, 1 << 16):
            h.update(chunk.data)
    return h.hexdigest()


def fingerprint(values: Iterable[tuple[np.ndarray, str]]) -> str:
    """A hash of weights, each given with its layout, that is the same for every framework and layout holding them."""
    # Squeezed: nnfs's (1, n) bias holds the same weights as a framework's (n,).
    digests = sorted(digest([_squeeze(canonical(value, layout))]) for value, layout in values)
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def _squeeze(a: np.ndarray) -> np.ndarray:
    return a.reshape(squeezed(a.shape))
