"""JAX adapter: pure functions marked with ``tap``, Flax NNX and Linen modules captured call by call; trained with
the file's optax transformation."""

from layerdiff.adapters.jax.capture import JaxAdapter as Capture
from layerdiff.adapters.jax.optim import Stepping


class JaxAdapter(Stepping, Capture):
    """Capture (``capture``) and training steps (``optim``)."""


__all__ = ["JaxAdapter"]
