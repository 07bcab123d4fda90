"""Bug: the first Linear divides its weight gradient by the batch size (its input gradient is right)."""
import mytorch.nn as nn
import numpy as np

from mytorch_mlp import input_shape, loss, make_model, targets  # noqa: F401


class MeanGradLinear(nn.Linear):
    def backward(self, dLdZ):
        out = super().backward(dLdZ)
        self.dLdW = self.dLdW / dLdZ.shape[0]
        return out


np.random.seed(0)
model = make_model()
first = MeanGradLinear(20, 32)
first.W, first.b = model[0].W, model[0].b
model[0] = first

EXPECTED = {"reference": "mytorch_mlp_torch.py", "culprits": [{"layer": "0", "pass": "param_grad"}], "hint": "batch size"}
