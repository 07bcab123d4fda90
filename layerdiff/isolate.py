"""Teacher-forced replay: run side B again with every aligned layer handed side A's recorded values.

Forward, each aligned layer of B passes on A's output instead of its own, so the next layer receives exactly what
A's did; backward, the gradient arriving at each aligned layer's output is A's. What B records in the replay is
then each layer's *local* result: its own computation on correct inputs. A layer whose local result differs from A's
is a culprit; one that differs only in the plain run inherited its error.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterable

import numpy as np

from layerdiff.adapter import Feed, Forcing, Lazy
from layerdiff.align import Alignment
from layerdiff.modelfile import Model
from layerdiff.records import Recording, Trace


def keys_of(keys: Iterable[str], kind: str) -> list[str]:
    """A layer's tensor keys of one kind (``output``, ``output.1``…), in order."""
    return sorted((k for k in keys if k.split(".")[0] == kind), key=lambda k: int(k.partition(".")[2] or 0))


def forcing_from(a: Recording, b: Recording, alignment: Alignment) -> Forcing:
    """A's recorded outputs and output gradients, keyed by the names of B's aligned layers; each read from ``a``
    when the replay reaches its layer, so that memory does not grow with the model. A layer whose values a
    stats-only dump did not keep is not forced."""
    tables: dict[str, dict[str, Callable[[], list[np.ndarray]]]] = {"output": {}, "grad_output": {}}
    for i, j in alignment.pairs:
        la, lb = a.layers[i], b.layers[j]
        for kind, table in tables.items():
            keys_a, keys_b = keys_of(la.tensors, kind), keys_of(lb.tensors, kind)
            alike = all(la.tensors[x].shape == lb.tensors[y].shape and la.tensors[x].stored for x, y in zip(keys_a, keys_b))
            if keys_a and len(keys_a) == len(keys_b) and alike:
                table[lb.name] = partial(_read, a, i, keys_a)
    return Forcing(Lazy(tables["output"]), Lazy(tables["grad_output"]))


def _read(recording: Recording, index: int, keys: list[str]) -> list[np.ndarray]:
    return [recording.tensor(index, k) for k in keys]


def replay(model: Model, feed: Feed, forcing: Forcing) -> Trace:
    """Side B's local trace: the same run, teacher-forced."""
    return model.run(feed, forcing)
