"""NumPy adapter: drives a hand-written network's forward and backward passes itself; trains it with the file's
optimizer object or ``update(model, lr)``."""

from layerdiff.adapters.numpy.capture import NumpyAdapter as Capture
from layerdiff.adapters.numpy.optim import Stepping


class NumpyAdapter(Stepping, Capture):
    """Capture (``capture``) and training steps (``optim``)."""


__all__ = ["NumpyAdapter"]
