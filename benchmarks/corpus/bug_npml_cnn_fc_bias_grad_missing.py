"""Bug: the FullyConnected head never accumulates its bias gradient."""
import numpy as np

from npml_cnn import CNN, input_shape  # noqa: F401
from numpy_ml.neural_nets.layers import FullyConnected


class NoBiasGrad(FullyConnected):
    def _bwd(self, dLdy, X):
        dX, dW, dB = super()._bwd(dLdy, X)
        return dX, dW, 0 * dB


model = CNN()
model.fc = model.layers[3] = NoBiasGrad(10)

EXPECTED = {"reference": "npml_cnn_torch.py", "culprits": [{"layer": "fc", "pass": "param_grad"}], "hint": "all zeros"}
