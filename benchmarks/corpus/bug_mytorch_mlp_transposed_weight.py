"""Bug: the square middle Linear computes A W + b instead of A W^T + b in its forward pass."""
import mytorch.nn as nn
import numpy as np

from mytorch_mlp import input_shape, loss, make_model, targets  # noqa: F401


class TransposedLinear(nn.Linear):
    def forward(self, A):
        super().forward(A)
        return A @ self.W + self.b


np.random.seed(0)
model = make_model(middle=TransposedLinear)

EXPECTED = {"reference": "mytorch_mlp_torch.py", "culprits": [{"layer": "2", "pass": "forward"}], "hint": None}
