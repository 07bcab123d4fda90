"""Whether a side gives the same iteration twice: a side whose two runs differ has randomness left on (dropout), and
comparing it with anything would be comparing noise.

The first run is read from where it is kept: the trace in memory, or the dump it was already written to (``run``
writes each run as it ends, so that two whole runs are never held at once).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from layerdiff.errors import ModelFileError
from layerdiff.layout import canonical
from layerdiff.metrics import diff, noise_floor
from layerdiff.records import LayerInfo, ParamRecord, Trace


class Kept(Protocol):
    """The first run: its layers' tensors in PyTorch's axis order (``store.Dump``, ``records.InMemory``)."""

    @property
    def layers(self) -> list[LayerInfo]: ...

    def tensor(self, index: int, key: str) -> np.ndarray: ...


def run_to_run(source: str, dtype: str, first: Kept, params: list[ParamRecord], second: Trace) -> float:
    """The largest relative difference between two identical runs; an error past what rounding explains.

    ``params``: the first run's parameters, with their values. Nondeterministic kernels stay under the noise floor
    and widen the tolerances; dropout left on does not. Forward values are checked in order first, then gradients
    from the output, so the layer named is the source.
    """
    for p1, p2 in zip(params, second.params):
        if p1.value.shape != p2.value.shape or not np.array_equal(p1.value, p2.value, equal_nan=True):
            raise ModelFileError(
                f"{source} changes its parameters during an iteration: '{p1.name}' (layer '{p1.layer}') differs "
                "after a second run (an optimizer step inside backward?). layerdiff compares one iteration on fixed "
                "weights: move the update out of the layers' backward."
            )
    pairs = list(zip(first.layers, second.layers))
    forward = [(i, r2, k) for i, (r1, r2) in enumerate(pairs) for k in r1.tensors if not k.startswith("grad")]
    backward = [(i, r2, k) for i, (r1, r2) in reversed(list(enumerate(pairs))) for k in r1.tensors if k.startswith("grad")]
    worst = 0.0
    for index, r2, key in forward + backward:
        v1 = first.tensor(index, key)
        v2 = canonical(r2.tensors[key], r2.layouts.get(key, "")) if key in r2.tensors else None
        if v2 is not None and v1.shape == v2.shape and np.array_equal(v1, v2, equal_nan=True):
            continue
        d = None if v2 is None else diff(key, v1, v2, noise_floor(dtype, v1.size))
        if d is None or not d.ok:
            raise ModelFileError(
                f"{source} is not deterministic: layer '{first.layers[index].name}' gives a different {key} on two runs "
                "with the same weights and inputs (dropout or other randomness left on). Turn it off (dropout p=0, or "
                "eval() for a torch module) and run again."
            )
        worst = max(worst, d.max_rel)
    return worst
