"""Bug: the square middle Dense multiplies by its weight transposed in the forward pass (backward left as it is)."""
import numpy as np
from tinynn.core.layer import Dense, ReLU, Sigmoid
from tinynn.core.net import Net

from tinynn_mlp import input_shape, loss, targets  # noqa: F401


class TransposedDense(Dense):
    def forward(self, inputs):
        super().forward(inputs)  # builds the weights on the first call and keeps the input for backward
        return inputs @ self.params["w"].T + self.params["b"]


np.random.seed(0)
model = Net([Dense(32), ReLU(), TransposedDense(32), Sigmoid(), Dense(10)])

EXPECTED = {"reference": "tinynn_mlp_torch.py", "culprits": [{"layer": "layers.2", "pass": "forward"}], "hint": None}
