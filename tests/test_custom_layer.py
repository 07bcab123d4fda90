import numpy as np
import torch
from layerdiff.testing import assert_same

class Swish:  # x * sigmoid(x), forward and backward by hand
    def forward(self, x):
        self.x, self.s = x, 1 / (1 + np.exp(-x))
        return x * self.s
    def backward(self, dout):
        return dout * self.s * (1 + self.x * (1 - self.s))

def test_swish_matches_torch():
    assert_same([Swish()], torch.nn.SiLU(), input_shape=(8, 16))
