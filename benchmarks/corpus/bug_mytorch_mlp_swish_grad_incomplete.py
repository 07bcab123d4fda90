"""Bug: Swish's backward keeps only sigmoid(beta z) and drops the beta z sigmoid'(beta z) term."""
import numpy as np
import mytorch.nn as nn

from mytorch_mlp import input_shape, loss, make_model, targets  # noqa: F401


class HalfSwish(nn.Swish):
    def backward(self, dLdA):
        super().backward(dLdA)
        return dLdA / (1 + np.exp(-self.beta * self.Z))


np.random.seed(0)
model = make_model(swish=HalfSwish)

EXPECTED = {"reference": "mytorch_mlp_torch.py", "culprits": [{"layer": "3", "pass": "backward"}], "hint": None}
