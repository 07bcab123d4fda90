"""Bug: the last Dense never computes its bias gradient (left at zero): a param_grad-only bug."""
import numpy as np
from tinynn.core.layer import Dense, ReLU, Sigmoid
from tinynn.core.net import Net

from tinynn_mlp import input_shape, loss, targets  # noqa: F401


class NoBiasGradDense(Dense):
    def backward(self, grad):
        out = super().backward(grad)
        self.grads["b"] = np.zeros_like(self.params["b"])
        return out


np.random.seed(0)
model = Net([Dense(32), ReLU(), Dense(32), Sigmoid(), NoBiasGradDense(10)])

EXPECTED = {"reference": "tinynn_mlp_torch.py", "culprits": [{"layer": "layers.4", "pass": "param_grad"}], "hint": "all zeros"}
