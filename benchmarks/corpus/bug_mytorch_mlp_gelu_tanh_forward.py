"""Bug: GELU's forward uses the tanh approximation while its backward keeps the exact (erf) derivative."""
import numpy as np
import mytorch.nn as nn

from mytorch_mlp import input_shape, loss, make_model, targets  # noqa: F401


class TanhGELU(nn.GELU):
    def forward(self, Z):
        super().forward(Z)
        self.A = 0.5 * Z * (1 + np.tanh(np.sqrt(2 / np.pi) * (Z + 0.044715 * Z ** 3)))
        return self.A


np.random.seed(0)
model = make_model(gelu=TanhGELU)

EXPECTED = {"reference": "mytorch_mlp_torch.py", "culprits": [{"layer": "1", "pass": "forward"}], "hint": None}
