"""PyTorch adapter: every leaf module captured through hooks, named by its module path; trained with the file's
``torch.optim`` optimizer."""

from layerdiff.adapters.torch.capture import TorchAdapter as Capture
from layerdiff.adapters.torch.optim import Stepping


class TorchAdapter(Stepping, Capture):
    """Capture (``capture``) and training steps (``optim``)."""


__all__ = ["TorchAdapter"]
