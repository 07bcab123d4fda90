"""NumPy adapter: drives a hand-written network's forward and backward passes itself."""

from layerdiff.adapters.numpy.driver import NumpyAdapter

__all__ = ["NumpyAdapter"]
