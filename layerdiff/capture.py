"""The kit every adapter uses: what capturing one iteration means the same way in every framework.

- ``Forcer`` hands out a replay's forced values when they fit the layer (as many as its outputs, each of the same
  shape) and notes each one handed out: the receipt ``isolate`` checks to prove a replay was forced;
- ``seeded_upstream``: without a loss, the upstream gradient on each output is the feed's seeded one and the loss is
  ``<output, r>``;
- ``loss_record``: the loss as a layer of its own, so that its input gradient is compared like any other;
- ``finish``: the trace, each layer's parameters attached to it; ``said``: what the adapter noted in it;
- ``positional``: inputs given by keyword refused where the model takes them in order;
- ``Raised``: a backward pass that raised in the user's code, carrying the trace recorded up to that layer, so that
  what was recorded is compared (the forward in full, the backward down to it) and the failure is a finding.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from layerdiff.adapter import Feed, Forcing
from layerdiff.errors import ModelFileError
from layerdiff.layout import squeezed
from layerdiff.records import LayerRecord, ParamRecord, RunInfo, Trace


class Forcer:
    """A replay's forced values, by layer name; ``handed`` notes which kinds were substituted at which layer."""

    def __init__(self, forcing: Forcing | None) -> None:
        self.forcing = forcing or Forcing()
        self.handed: dict[str, set[str]] = {}

    def values(self, kind: str, name: str, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray] | None:
        """All the forced ``kind`` (``"output"`` or ``"grad_output"``) values of layer ``name``, or None when it is not
        forced or they do not fit ``shapes``.

        >>> forcer = Forcer(Forcing(outputs={"fc1": [np.zeros(2)]}))
        >>> forcer.values("output", "fc1", [(2,)])[0].shape, forcer.values("output", "fc1", [(3,)]), forcer.handed
        ((2,), None, {'fc1': {'output'}})
        """
        given = self.some(kind, name, shapes)
        return None if given is None or any(g is None for g in given) else [g for g in given if g is not None]

    def some(self, kind: str, name: str, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray | None] | None:
        """``values``, where the other side may have recorded fewer values than this layer returns (nn.RNN's h_n
        beside its output): those it lacks are None, and the layer keeps its own.

        >>> Forcer(Forcing(outputs={"rnn": [np.zeros(2)]})).some("output", "rnn", [(2,), (3,)])[1] is None
        True
        """
        forced = self._table(kind).get(name)
        if forced is None or len(forced) > len(shapes) or not all(_fits(f, s) for f, s in zip(forced, shapes)):
            return None
        self.handed.setdefault(name, set()).add(kind)
        given: list[np.ndarray | None] = [np.asarray(f).reshape(s) for f, s in zip(forced, shapes)]
        return given + [None] * (len(shapes) - len(forced))

    def value(self, kind: str, name: str, index: int, shape: tuple[int, ...]) -> np.ndarray | None:
        """One forced value: the ``index``-th of layer ``name``, when it fits ``shape``."""
        forced = self._table(kind).get(name)
        if forced is None or index >= len(forced) or not _fits(forced[index], shape):
            return None
        self.handed.setdefault(name, set()).add(kind)
        return np.asarray(forced[index]).reshape(shape)

    def _table(self, kind: str) -> Mapping[str, list[np.ndarray]]:
        return self.forcing.outputs if kind == "output" else self.forcing.grad_outputs


def _fits(value: np.ndarray, shape: Sequence[int]) -> bool:
    """Whether a forced value fits a layer's: the same shape, or the same but for axes of length 1 (PyTorch's
    nn.LSTM hands out h as (1, N, H) where a hand-written cell returns (N, H))."""
    return np.shape(value) == tuple(shape) or squeezed(np.shape(value)) == squeezed(tuple(shape))


def seeded_upstream(feed: Feed, outputs: Sequence[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    """The feed's seeded gradient on each output (in its dtype), and the loss it is the gradient of, ``<output, r>``."""
    upstream = [feed.upstream(i, tuple(np.shape(o))).astype(np.asarray(o).dtype) for i, o in enumerate(outputs)]
    return float(sum(np.vdot(np.asarray(o), u) for o, u in zip(outputs, upstream))), upstream


def loss_record(kind: str, logits: np.ndarray, value: np.ndarray, dlogits: np.ndarray | None) -> LayerRecord:
    """The loss as a layer: its input is the model's output, its input gradient what the loss hands back to it."""
    value = np.asarray(value)
    return LayerRecord(
        "loss",
        kind,
        {
            "input": logits,
            "output": value,
            "grad_input": np.zeros(np.shape(logits), dtype=value.dtype) if dlogits is None else dlogits,
            "grad_output": np.ones((), dtype=value.dtype),
        },
    )


def finish(
    records: list[LayerRecord],
    params: list[ParamRecord],
    loss: float | None,
    upstream: list[np.ndarray],
    forcer: Forcer,
    settings: Mapping[str, str] | None = None,
) -> Trace:
    """The run's trace, each layer record naming the parameters that belong to it."""
    for r in records:
        r.params = [p.name for p in params if p.layer == r.name]
    info = RunInfo(settings=dict(settings or {}))
    return Trace(records, params, loss, info, upstream=upstream, forced=forcer.handed)


class Raised(ModelFileError):
    """The user's backward raised in layer ``trace.failure.layer``; ``trace`` is what was recorded before (its
    parameters' gradients only for the layers whose backward ran). Where nothing compares the partial trace (a
    dump, a gradient check), it stops the command as the user's own error, their traceback above it."""

    def __init__(self, error: ModelFileError, trace: Trace) -> None:
        super().__init__(str(error), error.details)
        self.trace = trace


def said(trace: Trace, source: str) -> list[str]:
    """What an adapter said of how it ran its model (the settings it named ``note.*`` in ``finish``): a loss whose
    gradient is not its value's. What it said of a parameter's gradient goes on that parameter's link instead."""
    return [f"{source}: {v}" for k, v in trace.info.settings.items() if k.startswith("note.") and not k.startswith("note.gradient of ")]


def positional(feed: Feed, source: str, framework: str) -> None:
    """Refuse inputs given by keyword to a model that takes them by position."""
    if feed.names:
        raise ModelFileError(
            f"The inputs are given by keyword ({', '.join(feed.names)}), but the {framework} model in {source} is called "
            "with them in order: declare them as a list, `inputs = [...]`, in the order the model takes them."
        )
