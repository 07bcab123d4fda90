"""Bug: Tanh's backward uses 1 - z^2 of its input instead of 1 - tanh(z)^2."""
import mytorch.nn as nn
import numpy as np

from mytorch_cnn import input_shape, loss, make_model, targets  # noqa: F401


class WrongTanh(nn.Tanh):
    def forward(self, Z):
        self.Z = Z
        return super().forward(Z)

    def backward(self, dLdA):
        return dLdA * (1 - self.Z ** 2)


np.random.seed(0)
model = make_model(tanh=WrongTanh)

EXPECTED = {"reference": "mytorch_cnn_torch.py", "culprits": [{"layer": "4", "pass": "backward"}], "hint": None}
