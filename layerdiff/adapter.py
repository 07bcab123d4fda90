"""The adapter protocol and the registry that finds adapters through the ``layerdiff.adapters`` entry points.

An adapter runs one framework's model for one iteration and hands back NumPy arrays; nothing past it sees a
tensor. Only adapters whose framework is already imported (in ``sys.modules``) are loaded, so that
``import layerdiff`` never imports a framework.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np

from layerdiff.errors import ModelFileError
from layerdiff.records import ParamRecord, Trace

if TYPE_CHECKING:
    from layerdiff.modelfile import Model

GROUP = "layerdiff.adapters"


@dataclass
class Feed:
    """What both sides receive: the same inputs, targets, and upstream gradient.

    ``upstream(index, shape)`` gives the seeded gradient on output ``index`` when the model has no loss.
    """

    inputs: list[np.ndarray]
    targets: np.ndarray | None
    upstream: Callable[[int, tuple[int, ...]], np.ndarray]


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


@runtime_checkable
class Adapter(Protocol):
    name: str

    def claims(self, obj: Any) -> bool:
        """Whether ``obj`` is a model of this framework."""

    def version(self) -> str:
        """The framework's version, recorded in dumps."""

    def prepare(self, model: Model, dtype: str) -> None:
        """Cast the model to float64 (``dtype == "float64"``) or leave it in its own precision (``"native"``).

        Where the file declares no ``activation_layout``, an adapter may set its framework's convention here.
        """

    def parameters(self, model: Model) -> list[ParamRecord]:
        """Every parameter in a stable order, as the framework holds it, with its layout. The values may be the
        model's own memory (PyTorch's are): read them before the model changes, or copy them."""

    def load_parameters(self, model: Model, values: dict[str, np.ndarray]) -> None:
        """Overwrite parameters by name, each array already in this side's layout."""

    def run(self, model: Model, feed: Feed, forcing: Forcing | None = None) -> Trace:
        """One forward and backward pass, every layer recorded in execution order; forced where ``forcing`` says.

        Parameter values may be the model's own arrays, not copies (``runner.capture`` keeps a snapshot); gradients
        and layer tensors must be the run's own, which a later run does not overwrite.

        The feed and forced values come laid out as the model takes them (``Model.run`` transposes them).
        """


REQUIRED = ("claims", "version", "prepare", "parameters", "load_parameters", "run")


def verify(adapter: object, origin: str) -> Adapter:
    """Check a plugin when it is loaded, naming what it lacks."""
    missing = [m for m in REQUIRED if not callable(getattr(adapter, m, None))]
    if missing or not isinstance(getattr(adapter, "name", None), str):
        lacks = ", ".join(missing + ([] if isinstance(getattr(adapter, "name", None), str) else ["name"]))
        raise ModelFileError(f"The layerdiff adapter {origin} lacks: {lacks}. Its package needs updating.")
    return adapter  # type: ignore[return-value]


_loaded: dict[str, Adapter] = {}


def available() -> list[str]:
    """Names of the installed adapters (their frameworks' import names)."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def loaded_adapters() -> list[Adapter]:
    """The adapters whose framework the running process has already imported."""
    found = []
    for ep in entry_points(group=GROUP):
        if ep.name not in sys.modules:
            continue
        if ep.name not in _loaded:
            _loaded[ep.name] = verify(ep.load()(), f"'{ep.name}' ({ep.value})")
        found.append(_loaded[ep.name])
    # The NumPy adapter claims any object with forward/backward: frameworks get the first say.
    return sorted(found, key=lambda a: a.name == "numpy")


def adapter_for(obj: Any) -> Adapter | None:
    for adapter in loaded_adapters():
        if adapter.claims(obj):
            return adapter
    return None
