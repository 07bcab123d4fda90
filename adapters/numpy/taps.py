"""Recording a NumPy network's values as they pass: the copies one step hands the next, and ``tap``/``tap_grad``
calls made inside the user's code, which a replay answers with forced values."""

from __future__ import annotations

from typing import Any

import numpy as np

from layerdiff.capture import Forcer
from layerdiff.records import LayerRecord, snapshot, unique_name


class Copies:
    """Snapshots of what one step hands to the next: a layer's input is the array the layer before it returned,
    untouched in between, so it is copied once for both records."""

    def __init__(self) -> None:
        self.last: dict[int, tuple[Any, np.ndarray]] = {}  # the value itself is held, so that its id stays its own
        self.now: dict[int, tuple[Any, np.ndarray]] = {}

    def received(self, value: Any) -> np.ndarray:
        """A value a step receives: the copy of what the step before handed on, when it is that very array."""
        hit = self.last.get(id(value))
        return hit[1] if hit is not None and hit[0] is value else snapshot(value)

    def handed_on(self, value: Any) -> np.ndarray:
        """A value a step hands on, copied always: it may be the input, changed in place and returned."""
        copy = snapshot(value)
        self.now[id(value)] = (value, copy)
        return copy

    def step(self) -> None:
        self.last, self.now = self.now, {}


class NumpyTapper:
    """Collects ``tap``/``tap_grad`` calls made inside the user's code; in a replay, hands back forced values."""

    def __init__(self, trace_layers: list[LayerRecord], forcer: Forcer) -> None:
        self.layers = trace_layers
        self.by_name: dict[str, LayerRecord] = {}
        self.forcer = forcer

    def tap(self, name: str, value: Any) -> Any:
        record = LayerRecord(unique_name(name, self.by_name), "tap", {"output": snapshot(value)})
        self.by_name[record.name] = record
        self.layers.append(record)
        return forced(self.forcer, "output", record.name, [value])[0]

    def tap_grad(self, name: str, grad: Any) -> Any:
        # A name tapped n times gets its gradients in reverse order, as backward visits them.
        candidates = [r for r in self.layers if r.kind == "tap" and r.name.split("#")[0] == name]
        pending = [r for r in candidates if "grad_output" not in r.tensors]
        if not candidates:
            return grad
        record = pending[-1] if pending else candidates[-1]
        record.tensors["grad_output"] = snapshot(grad)
        return forced(self.forcer, "grad_output", record.name, [grad])[0]


def forced(forcer: Forcer, kind: str, name: str, values: list[Any]) -> list[Any]:
    """The forced values for a layer, in its own dtype, or its own values when it is not forced (or not alike)."""
    given = forcer.some(kind, name, [np.shape(v) for v in values])
    if given is None:
        return values
    return [v if f is None else np.array(f, dtype=np.asarray(v).dtype) for f, v in zip(given, values)]
