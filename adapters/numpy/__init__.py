"""NumPy adapter: drives a hand-written network's forward and backward passes itself."""

from layerdiff.adapters.numpy.capture import NumpyAdapter

__all__ = ["NumpyAdapter"]
