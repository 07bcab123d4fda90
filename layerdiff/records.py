"""What one forward and backward pass leaves behind: plain NumPy arrays in small dataclasses.

Adapters produce a ``Trace``; the store writes it; compare reads it back (or takes it straight from memory).
Tensor keys of a layer: ``input``, ``output``, ``grad_input``, ``grad_output``; a layer with several inputs or
outputs has ``input.1``, ``grad_input.1``… after the first.

A tensor is kept as its framework made it. One laid out otherwise than PyTorch (channels-last ``"N H W C"``) has
its layout recorded, and a ``Recording`` hands it out, with its shape, in PyTorch's order: what reads recordings
(align, compare, isolate, diagnose) never sees a layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from functools import cached_property
from typing import Any, Callable, Iterable, Mapping, Protocol

import numpy as np

from layerdiff.layout import canonical
from layerdiff.stats import TensorInfo, all_finite, summarize

KINDS = ("input", "output", "grad_output", "grad_input")  # in the order a layer runs


def tensor_key(kind: str, index: int) -> str:
    return kind if index == 0 else f"{kind}.{index}"


def key_order(key: str) -> tuple[int, int]:
    """Sorts tensor keys as a layer runs: inputs, outputs, then the gradients."""
    kind, _, index = key.partition(".")
    return (KINDS.index(kind) if kind in KINDS else len(KINDS), int(index or 0))


def keys_of(keys: Iterable[str], kind: str) -> list[str]:
    """A layer's tensor keys of one kind (``output``, ``output.1``…), in order.

    >>> keys_of(["output.1", "input", "output"], "output")
    ['output', 'output.1']
    """
    return sorted((k for k in keys if k.split(".")[0] == kind), key=key_order)


@dataclass
class LayerRecord:
    """One layer call. ``layouts`` names the axes of tensors not in PyTorch's order (``{"output": "N H W C"}``)."""

    name: str
    kind: str
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    params: list[str] = field(default_factory=list)
    layouts: dict[str, str] = field(default_factory=dict)
    # In one rank's recording of a sharded run: how a tensor is spread over the ranks ("shard(0)", "replicate",
    # "partial"), where the framework says so (``ranks`` infers the rest).
    placements: dict[str, str] = field(default_factory=dict)


@dataclass
class ParamRecord:
    """A parameter as its framework holds it; ``layout`` names its axes (``"in out"``, ``"O I H W"``)."""

    name: str
    layer: str
    layout: str
    value: np.ndarray
    grad: np.ndarray | None = None
    placement: str = ""  # in one rank's recording: how the parameter is spread over the ranks, when known
    gates: str = ""  # the gate blocks packed along its first axis ("i f g o"), for a recurrent layer's weight
    note: str = ""  # how the adapter found it, where that was a choice (a gradient paired by shape)


@dataclass
class RegionRecord:
    """A compiled region of a side (``torch.compile``), against the eager module tree it was compiled from: each
    tensor as ``(compiled, eager)``, computed from the same inputs; ``first_op`` where the two first part."""

    name: str  # "compiled region 0", or "compiled model" for the whole model's output and gradients
    modules: str  # the modules its operations come from: "0 … 2"
    tensors: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    first_op: str = ""


@dataclass(frozen=True)
class RunInfo:
    """How one side's iteration was made: what a dump's root attributes hold."""

    framework: str = ""
    framework_version: str = ""
    layerdiff_version: str = ""
    python: str = ""
    dtype: str = "float64"  # as asked: "float64" (cast) or "native"
    compute_dtype: str = "float64"  # what the layers computed in
    seed: int = 0
    script: str = ""
    script_sha256: str = ""
    weights_sha256: str = ""
    inputs_sha256: str = ""
    upstream_sha256: str = ""  # "loss:" and the targets' hash, or "random:" and the seeded upstream gradient's
    run_to_run: float | None = None  # the largest difference between two identical runs; None: not measured
    rank: int = 0  # of a sharded run recorded one dump per rank (``layerdiff.record`` under torchrun)
    world_size: int = 1
    settings: Mapping[str, str] = field(default_factory=dict)  # the adapter's own (JAX's precision flags)

    @property
    def random_upstream(self) -> bool:
        """Whether the gradients answer a seeded random upstream gradient rather than a loss."""
        return self.upstream_sha256.startswith("random:")


@dataclass(frozen=True)
class Failure:
    """A backward pass that raised: in which layer, the exception on one line ("ValueError: ... (pool.py, line 12)"),
    and the layers whose backward never ran (that one and those before it), whose gradients the trace does not hold."""

    layer: str
    message: str
    unfinished: tuple[str, ...]


@dataclass
class Trace:
    """One iteration of one implementation, in execution order."""

    layers: list[LayerRecord]
    params: list[ParamRecord]
    loss: float | None
    info: RunInfo = field(default_factory=RunInfo)
    inputs: list[np.ndarray] = field(default_factory=list)
    targets: np.ndarray | None = None
    upstream: list[np.ndarray] = field(default_factory=list)  # empty when the model has a loss
    input_names: tuple[str, ...] = ()  # the inputs' keywords, when the model was called as model(**inputs)
    # In a replay: per layer, the kinds ("output", "grad_output") the adapter substituted forced values for.
    forced: dict[str, set[str]] = field(default_factory=dict)
    regions: list[RegionRecord] = field(default_factory=list)  # a compiled model's code against its eager tree
    failure: Failure | None = None  # the backward raised: the trace holds what was recorded up to it


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
class LayerInfo:
    index: int
    name: str
    kind: str
    tensors: dict[str, TensorInfo]
    params: tuple[str, ...]


class Recording(Protocol):
    """What compare reads, from a dump on disk (``store.Dump``) or a trace in memory (``InMemory``)."""

    source: str

    @property
    def layers(self) -> list[LayerInfo]: ...

    @property
    def info(self) -> RunInfo: ...

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

    def regions(self) -> list[RegionRecord]:
        """A compiled side's regions against its eager module tree (``torch.compile``); none for others."""


class InMemory:
    """A trace read as a recording, for comparisons that write no dump."""

    def __init__(self, trace: Trace, source: str) -> None:
        self.trace = trace
        self.source = source
        self._params = {p.name: p for p in trace.params}

    @cached_property
    def layers(self) -> list[LayerInfo]:
        """Summarised when first asked for (every entry read): reading a tensor alone needs none of it."""
        return [
            LayerInfo(i, r.name, r.kind, {k: summarize(v, r.layouts.get(k, "")) for k, v in r.tensors.items()}, tuple(r.params))
            for i, r in enumerate(self.trace.layers)
        ]

    @property
    def info(self) -> RunInfo:
        return self.trace.info

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

    def regions(self) -> list[RegionRecord]:
        return self.trace.regions
