"""PyTorch reference for tinynn_mlp.py."""
import numpy as np
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 10))
loss = nn.CrossEntropyLoss()  # takes the one-hot labels as class probabilities
input_shape = (16, 20)
targets = np.eye(10)[np.random.default_rng(1).integers(0, 10, size=16)]
