"""Bug: the second FullyConnected accumulates its weight gradient twice: a param_grad-only bug."""
import numpy as np

from npml_mlp import MLP, input_shape  # noqa: F401
from numpy_ml.neural_nets.layers import FullyConnected


class DoubleDW(FullyConnected):
    def _bwd(self, dLdy, X):
        dX, dW, dB = super()._bwd(dLdy, X)
        return dX, 2 * dW, dB


model = MLP()
model.fc2 = model.layers[2] = DoubleDW(32, act_fn="Tanh")

EXPECTED = {"reference": "npml_mlp_torch.py", "culprits": [{"layer": "fc2", "pass": "param_grad"}], "hint": "2 ×"}
