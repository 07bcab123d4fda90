"""What one forward and backward pass leaves behind: plain NumPy arrays in small dataclasses.

Adapters produce a ``Trace``; the store writes it; compare reads it back (or takes it straight from memory).
Tensor keys of a layer: ``input``, ``output``, ``grad_input``, ``grad_output``; a layer with several inputs or
outputs has ``input.1``, ``grad_input.1``… after the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import numpy as np

TENSOR_KINDS = ("input", "output", "grad_input", "grad_output")


def tensor_key(kind: str, index: int) -> str:
    return kind if index == 0 else f"{kind}.{index}"


def unique_name(name: str, taken: Mapping[str, Any]) -> str:
    """``name``, numbered ``name#2``, ``name#3``… when a layer is called again.

    >>> unique_name("fc1", {"fc1": None})
    'fc1#2'
    """
    if name not in taken:
        return name
    n = 2
    while f"{name}#{n}" in taken:
        n += 1
    return f"{name}#{n}"


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


def snapshot(value: Any) -> np.ndarray:
    """A private copy: hand-written layers reuse and mutate their arrays after returning them."""
    return np.array(value, copy=True)


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str
    norm: float  # of the finite entries: alignment tells layers apart by it without reading the tensor
    mean: float
    layout: str = ""  # its axes, when not in PyTorch's order


@dataclass(frozen=True)
class LayerInfo:
    index: int
    name: str
    kind: str
    tensors: dict[str, TensorInfo]
    params: tuple[str, ...]


def summarize(a: np.ndarray, layout: str = "") -> TensorInfo:
    finite = np.where(np.isfinite(a), a, 0).astype(np.float64, copy=False) if a.size else np.zeros(1)
    return TensorInfo(tuple(a.shape), str(a.dtype), float(np.linalg.norm(finite.ravel())), float(finite.mean()), layout)


class Recording(Protocol):
    """What compare reads, from a dump on disk (``store.Dump``) or a trace in memory (``InMemory``)."""

    source: str
    layers: list[LayerInfo]

    @property
    def meta(self) -> dict[str, Any]: ...

    @property
    def loss(self) -> float | None: ...

    def tensor(self, index: int, key: str) -> np.ndarray: ...

    def param(self, name: str) -> ParamRecord: ...

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
        return self.trace.layers[index].tensors[key]

    def param(self, name: str) -> ParamRecord:
        return self._params[name]

    def param_names(self) -> list[str]:
        return list(self._params)
