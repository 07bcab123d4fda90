"""tinynn's ELU between two Dense layers (tinynn's ELU.derivative, as shipped in tinynn 0.1.1)."""
import numpy as np
from tinynn.core.layer import ELU, Dense
from tinynn.core.net import Net

np.random.seed(0)
model = Net([Dense(32), ELU(), Dense(10)])
input_shape = (16, 20)


# Read in tinynn/core/layer.py before any run: ELU.derivative is `x > 0.0 + (x < 0.0) * alpha * np.exp(x)`, which
# Python parses as `x > (0.0 + ...)`: 0 where x < 0 instead of alpha * exp(x). A genuine defect of the package.
DEFECTS = [{"layer": "layers.1", "pass": "backward"}]
