"""PyTorch reference for tinynn_cnn.py: channels-first, flattened in tinynn's (h, w, c) order."""
import torch
from torch import nn

torch.manual_seed(0)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 10),
        )

    def forward(self, x):
        x = self.layers[:5](x)
        return self.layers[6](self.layers[5](x.permute(0, 2, 3, 1)))


model = CNN()
