"""Bug: the Sigmoid's derivative is taken as x (1 - x) of its input, not s (1 - s) of its output."""
import numpy as np
from tinynn.core.layer import Dense, ReLU, Sigmoid
from tinynn.core.net import Net

from tinynn_mlp import input_shape, loss, targets  # noqa: F401


class WrongSigmoid(Sigmoid):
    def derivative(self, x):
        return x * (1.0 - x)


np.random.seed(0)
model = Net([Dense(32), ReLU(), Dense(32), WrongSigmoid(), Dense(10)])

EXPECTED = {"reference": "tinynn_mlp_torch.py", "culprits": [{"layer": "layers.3", "pass": "backward"}], "hint": None}
