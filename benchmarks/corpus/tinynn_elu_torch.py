"""PyTorch reference for tinynn_elu.py."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 32), nn.ELU(), nn.Linear(32, 10))
