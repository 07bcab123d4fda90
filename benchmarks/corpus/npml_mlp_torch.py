"""PyTorch reference for npml_mlp.py, as a port to torch.nn writes it: each activation a module of its own."""
import torch
from torch import nn

torch.manual_seed(0)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 32)
        self.relu1 = nn.ReLU()
        self.bn1 = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, 32)
        self.tanh2 = nn.Tanh()
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.bn1(self.relu1(self.fc1(x)))
        return self.fc3(self.tanh2(self.fc2(x)))


model = MLP()
input_shape = (16, 20)
