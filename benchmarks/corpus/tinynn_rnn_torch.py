"""PyTorch reference for tinynn_rnn.py: an Elman RNN with one weight on [h, x], as tinynn keeps it."""
import torch
from torch import nn

torch.manual_seed(0)


class ElmanRNN(nn.Module):
    def __init__(self, n_in, n_hidden):
        super().__init__()
        self.W = nn.Parameter(torch.randn(n_hidden, n_hidden + n_in) * 0.3)
        self.b = nn.Parameter(torch.zeros(n_hidden))

    def forward(self, x):
        h = x.new_zeros(x.shape[0], self.W.shape[0])
        for t in range(x.shape[1]):
            h = torch.tanh(torch.cat([h, x[:, t]], dim=1) @ self.W.T + self.b)
        return h


model = nn.Sequential(ElmanRNN(8, 16), nn.Linear(16, 10))
