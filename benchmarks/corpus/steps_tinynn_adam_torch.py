"""PyTorch reference for steps_tinynn_adam.py: tinynn_mlp_torch.py trained with torch.optim.Adam."""
import torch

from tinynn_mlp_torch import input_shape, loss, model, targets  # noqa: F401

optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
