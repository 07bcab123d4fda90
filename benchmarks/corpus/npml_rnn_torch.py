"""PyTorch reference for npml_rnn.py: nn.RNN, batch first, the time axis moved where numpy-ml keeps it."""
import torch
from torch import nn

torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(8, 16, batch_first=True)

    def forward(self, x):
        y, _ = self.rnn(x.transpose(1, 2))
        return y.transpose(1, 2)


model = Net()
