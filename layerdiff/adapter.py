"""The adapter protocol, what flows through it, and the registry that finds adapters.

An adapter runs one framework's model for one iteration and hands back NumPy arrays; nothing past it sees a
tensor. It is given a frozen ``Spec`` (what the model file declared that concerns running it), never the core's
own state, and writes into none. What every adapter does alike (the loss record, the seeded upstream gradient,
forced values that fit, parameters attached to their layers) lives in ``layerdiff.capture``, so that an adapter
is only its framework's hooks.

Adapters are found through the ``layerdiff.adapters`` entry points; only those whose framework is already imported
(in ``sys.modules``) are loaded, so that ``import layerdiff`` never imports a framework. ``register`` adds one by
hand (a test's ``layerdiff.testing.FakeAdapter``, a plugin under development).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np

from layerdiff.errors import ModelFileError
from layerdiff.records import ParamRecord, Trace

GROUP = "layerdiff.adapters"


@dataclass(frozen=True)
class Spec:
    """What a model file declares about running its model: all an adapter is told besides the model itself."""

    source: str  # the file's name, for messages: "mine.py"
    loss: Any = None  # None: the upstream gradient is the feed's seeded one
    layouts: Mapping[str, str] = field(default_factory=dict)  # {parameter: axes} the file declared
    glue: Mapping[str, Callable[..., Any]] = field(default_factory=dict)  # params_of, grads_of, input_grad_of, update
    output: str | int | None = None  # which part of a structured model output is compared ("logits"); None: the first
    gates: Mapping[str, str] = field(default_factory=dict)  # {layer or parameter prefix: its gate blocks, "i f g o"}
    update_in_backward: str | None = None  # the learning-rate argument of a backward that applies its own update


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` hands back: the model as the adapter's other calls take it, and its framework's layout of
    activations (``"N H W C"`` for Flax), used where the model file declares none."""

    model: Any
    activation_layout: str = ""


@dataclass
class Feed:
    """What both sides receive: the same inputs, targets, and upstream gradient.

    ``upstream(index, shape)`` gives the seeded gradient on output ``index`` when the model has no loss. ``names``,
    when given, are the keywords of the inputs (a Hugging Face model's ``input_ids``, ``attention_mask``).
    """

    inputs: list[np.ndarray]
    targets: np.ndarray | None
    upstream: Callable[[int, tuple[int, ...]], np.ndarray]
    names: tuple[str, ...] = ()  # the inputs' keywords, when the model is called as model(**inputs)


@dataclass
class Forcing:
    """Teacher forcing for a replay: the other side's recorded values substituted at named layers.

    ``outputs[name]``: after layer ``name`` has run, its output(s) take these values, so the layers after it receive
    them; ``grad_outputs[name]``: in the backward pass, the gradient(s) arriving at its output are replaced by these.
    What is recorded for a forced layer is its own result, computed from what it received: its local output, its
    local input gradient, and parameter gradients from forced inputs and forced upstream gradient.
    """

    outputs: Mapping[str, list[np.ndarray]] = field(default_factory=dict)
    grad_outputs: Mapping[str, list[np.ndarray]] = field(default_factory=dict)


class Lazy(Mapping[str, list[np.ndarray]]):
    """A forcing table whose values are made only when an adapter asks for them, one layer's at a time: a replay
    does not hold the other side's whole recording in memory.

    >>> table = Lazy({"fc1": lambda: [np.zeros(2)]})
    >>> list(table), table.get("fc1")[0].shape, table.get("fc2")
    (['fc1'], (2,), None)
    """

    def __init__(self, readers: dict[str, Callable[[], list[np.ndarray]]]) -> None:
        self._readers = readers

    def __getitem__(self, name: str) -> list[np.ndarray]:
        return self._readers[name]()

    def __contains__(self, name: object) -> bool:
        return name in self._readers  # Mapping's own would read the value to find out

    def __iter__(self) -> Iterator[str]:
        return iter(self._readers)

    def __len__(self) -> int:
        return len(self._readers)


@dataclass(frozen=True)
class Op:
    """One operation inside a zoomed module, in the order it ran: its name (``matmul``, ``softmax``, a primitive),
    its first floating output, and what it read: earlier operations by index, the module's inputs as ``-1 - k``
    (anything else, a parameter or a constant, is not listed)."""

    name: str
    output: np.ndarray
    reads: tuple[int, ...] = ()


@dataclass(frozen=True)
class Ops:
    """A module run at the level of its operations (``zoom``): the inputs it was called with, and its operations."""

    inputs: list[np.ndarray]
    ops: list[Op]


@runtime_checkable
class Adapter(Protocol):
    """One framework. ``fallback = True`` (optional) marks an adapter that claims objects by their shape (methods
    named forward and backward) rather than their type: it is asked after the others."""

    name: str

    def claims(self, obj: Any) -> bool:
        """Whether ``obj`` is a model of this framework."""

    def version(self) -> str:
        """The framework's version, recorded in dumps."""

    def prepare(self, obj: Any, spec: Spec, dtype: str) -> Prepared:
        """Cast the model to float64 (``dtype == "float64"``) or leave it in its own precision (``"native"``)."""

    def parameters(self, model: Any, spec: Spec) -> list[ParamRecord]:
        """Every parameter in a stable order, as the framework holds it, with its layout. The values may be the
        model's own memory (PyTorch's are): read them before the model changes, or copy them."""

    def load_parameters(self, model: Any, spec: Spec, values: dict[str, np.ndarray]) -> None:
        """Overwrite parameters by name, each array already in this side's layout."""

    def run(self, model: Any, spec: Spec, feed: Feed, forcing: Forcing | None = None) -> Trace:
        """One forward and backward pass, every layer recorded in execution order; forced where ``forcing`` says,
        each substitution noted in ``Trace.forced`` (``capture.Forcer`` does both).

        Parameter values may be the model's own arrays, not copies (``runner.capture`` keeps a snapshot); gradients
        and layer tensors must be the run's own, which a later run does not overwrite. The feed and forced values
        come laid out as the model takes them.
        """


REQUIRED = ("claims", "version", "prepare", "parameters", "load_parameters", "run")
# Optional, looked up with getattr so that an adapter without them still loads:
#     build(model, spec, feed) -> None
# makes the weights a model makes on its first forward, once the feed exists and before the weights are paired;
#     zoom(model, spec, feed, layer, inputs) -> Ops | None
# runs the model's forward once and records every operation inside the module called ``layer`` ("" for the whole
# model), that module called with ``inputs`` when given (the other side's, so that both run on equal inputs); None
# when the model has no module of that name.
OPTIONAL = ("build", "zoom")


def verify(adapter: object, origin: str) -> Adapter:
    """Check a plugin when it is loaded, naming what it lacks."""
    missing = [m for m in REQUIRED if not callable(getattr(adapter, m, None))]
    if missing or not isinstance(getattr(adapter, "name", None), str):
        lacks = ", ".join(missing + ([] if isinstance(getattr(adapter, "name", None), str) else ["name"]))
        raise ModelFileError(f"The layerdiff adapter {origin} lacks: {lacks}. Its package needs updating.")
    return adapter  # type: ignore[return-value]


_loaded: dict[str, Adapter] = {}
_registered: list[Adapter] = []


def available() -> list[str]:
    """Names of the installed adapters (their frameworks' import names)."""
    return sorted({ep.name for ep in entry_points(group=GROUP)} | {a.name for a in _registered})


def loaded_adapters() -> list[Adapter]:
    """The registered adapters, then those whose framework the running process has already imported."""
    found = list(_registered)
    for ep in entry_points(group=GROUP):
        if ep.name not in sys.modules:
            continue
        if ep.name not in _loaded:
            _loaded[ep.name] = verify(ep.load()(), f"'{ep.name}' ({ep.value})")
        found.append(_loaded[ep.name])
    return sorted(found, key=lambda a: bool(getattr(a, "fallback", False)))


def adapter_for(obj: Any) -> Adapter | None:
    for adapter in loaded_adapters():
        if adapter.claims(obj):
            return adapter
    return None


@contextmanager
def register(adapter: object) -> Iterator[Adapter]:
    """Use ``adapter`` (checked as a plugin is) before the installed ones for the duration of the block.

    >>> from layerdiff.testing import FakeAdapter
    >>> with register(FakeAdapter()) as fake:
    ...     fake.name in available()
    True
    """
    checked = verify(adapter, repr(type(adapter).__name__))
    _registered.insert(0, checked)
    try:
        yield checked
    finally:
        _registered.remove(checked)
