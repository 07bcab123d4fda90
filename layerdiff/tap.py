"""``tap`` and ``tap_grad``: mark a value in free-form code, the structured form of a print statement.

Outside a layerdiff run both return their argument untouched and record nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Protocol, TypeVar

T = TypeVar("T")


class Tapper(Protocol):
    def tap(self, name: str, value: Any) -> Any: ...

    def tap_grad(self, name: str, grad: Any) -> Any: ...


_active: contextvars.ContextVar[Tapper | None] = contextvars.ContextVar("layerdiff_tapper", default=None)


def tap(name: str, value: T) -> T:
    """Record ``value`` as the output of a layer called ``name``; return it (or, when replaying, the reference).

    Under PyTorch the gradient of a tapped tensor is recorded as well.

    Args:
        name: the layer's name, as the other implementation calls it (``"encoder.0.fc1"``).
        value: the layer's output: a NumPy array or a framework tensor.

    Returns:
        ``value`` itself outside a layerdiff run.

    >>> import numpy as np
    >>> h = np.ones(3)
    >>> tap("fc1", h) is h
    True
    """
    tapper = _active.get()
    if tapper is None:
        return value
    result: T = tapper.tap(name, value)
    return result


def tap_grad(name: str, grad: T) -> T:
    """Record ``grad`` as the gradient with respect to the output of the layer tapped as ``name``; return it (or,
    when replaying, the reference's).

    For hand-written backward passes in NumPy; frameworks with autograd record it from ``tap`` alone.

    >>> import numpy as np
    >>> g = np.ones(3)
    >>> tap_grad("fc1", g) is g
    True
    """
    tapper = _active.get()
    if tapper is None:
        return grad
    result: T = tapper.tap_grad(name, grad)
    return result


@contextlib.contextmanager
def tapping(tapper: Tapper) -> Iterator[None]:
    """Route every ``tap`` to ``tapper`` for the duration of the block (used by adapters)."""
    token = _active.set(tapper)
    try:
        yield
    finally:
        _active.reset(token)

