"""Recording a hand-written NumPy network inside the user's own training loop: each layer's ``forward`` and
``backward`` wrapped on the instance for one iteration, then restored.

The user's loop drives the layers as it always does; every call is recorded as the driver would record it (a layer
called twice, as a recurrent cell is, gives ``name``, ``name#2``…), and the k-th backward call of a layer answers its
k-th forward call counted from the last. The first layer's first input is the network's input, and the gradient the
last layer first received is the upstream gradient.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from layerdiff.adapter import Spec
from layerdiff.records import LayerRecord, ParamRecord, Trace, snapshot, tensor_key, unique_name

from layerdiff.adapters.numpy.capture import _input_grad
from layerdiff.adapters.numpy.network import Network


class Attachment:
    """The wrapped methods of one recording, live on the user's layers until ``detach``."""

    rank = 0
    world_size = 1

    def __init__(self, obj: Any, spec: Spec, placements: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.net = Network(obj, spec)
        self.values = {p.name: snapshot(p.slot.get()) for p in self.net.params()}
        self.records: list[LayerRecord] = []
        self.open: dict[str, list[LayerRecord]] = {}  # per layer, its calls whose backward has not come yet
        self.taken: dict[str, None] = {}
        self.wrapped: list[tuple[Any, str, Any]] = []  # (layer object, method, what its instance held before)
        for layer in self.net.layers:
            self._wrap(layer.obj, "forward", self._forward(layer.name, layer.obj))
            self._wrap(layer.obj, "backward", self._backward(layer.name, layer.obj))

    def _wrap(self, obj: Any, method: str, wrapper: Callable[..., Any]) -> None:
        self.wrapped.append((obj, method, obj.__dict__.get(method)))
        setattr(obj, method, wrapper)

    def _forward(self, name: str, obj: Any) -> Callable[..., Any]:
        original = getattr(obj, "forward")

        def forward(*args: Any, **kwargs: Any) -> Any:
            record = LayerRecord(unique_name(name, self.taken), type(obj).__name__)
            self.taken[record.name] = None
            for i, v in enumerate(a for a in args if isinstance(a, np.ndarray)):
                record.tensors[tensor_key("input", i)] = snapshot(v)
            out = original(*args, **kwargs)
            shown = out if out is not None else getattr(obj, "output", None)
            for i, v in enumerate(shown if isinstance(shown, tuple) else (shown,)):
                if isinstance(v, np.ndarray):
                    record.tensors[tensor_key("output", i)] = snapshot(v)
            self.records.append(record)
            self.open.setdefault(name, []).append(record)
            return out

        return forward

    def _backward(self, name: str, obj: Any) -> Callable[..., Any]:
        original = getattr(obj, "backward")

        def backward(*args: Any, **kwargs: Any) -> Any:
            pending = self.open.get(name) or []
            record = pending.pop() if pending else None
            if record is not None:
                for i, g in enumerate(a for a in args if isinstance(a, np.ndarray)):
                    record.tensors[tensor_key("grad_output", i)] = snapshot(g)
            returned = original(*args, **kwargs)
            dx = _input_grad(obj, returned)
            if record is not None and dx is not None:
                for i, g in enumerate(dx if isinstance(dx, list) else [dx]):
                    record.tensors[tensor_key("grad_input", i)] = snapshot(g)
            return returned

        return backward

    def detach(self) -> Trace:
        """Restore every method, and hand over what the iteration recorded."""
        for obj, method, before in reversed(self.wrapped):
            if before is None:
                delattr(obj, method)
            else:
                setattr(obj, method, before)
        params = [
            ParamRecord(p.name, p.owner, self.net.layout(p), self.values[p.name], _copy(self.net.grad(p)))
            for p in self.net.params()
        ]
        for r in self.records:
            r.params = [p.name for p in params if p.layer == r.name]
        first = next((r for r in self.records if "input" in r.tensors), None)
        last = self.records[-1] if self.records else None
        inputs = [] if first is None else [first.tensors["input"]]
        upstream = [] if last is None or "grad_output" not in last.tensors else [last.tensors["grad_output"]]
        return Trace(self.records, params, None, inputs=inputs, upstream=upstream)


def _copy(value: Any) -> np.ndarray | None:
    return None if value is None else snapshot(value)
