"""JAX adapter: pure functions marked with ``tap``, Flax NNX and Linen modules captured call by call."""

from layerdiff.adapters.jax.capture import JaxAdapter

__all__ = ["JaxAdapter"]
