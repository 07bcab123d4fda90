"""PyTorch reference for mytorch_cnn.py."""
import numpy as np
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 8, 3, 1, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
    nn.Conv2d(8, 8, 3, 2), nn.Tanh(), nn.Flatten(), nn.Linear(32, 10),
)
loss = nn.CrossEntropyLoss()
input_shape = (4, 3, 10, 10)
targets = np.eye(10)[np.random.default_rng(1).integers(0, 10, size=4)]
