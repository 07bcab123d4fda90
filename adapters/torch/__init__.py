"""PyTorch adapter: every leaf module captured through hooks, named by its module path."""

from layerdiff.adapters.torch.capture import TorchAdapter

__all__ = ["TorchAdapter"]
