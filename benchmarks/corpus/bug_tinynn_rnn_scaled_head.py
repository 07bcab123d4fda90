"""Bug: the Dense head after the RNN scales its output by 1.01."""
import numpy as np
from tinynn.core.layer import RNN, Dense
from tinynn.core.net import Net

from tinynn_rnn import input_shape  # noqa: F401


class ScaledDense(Dense):
    def forward(self, inputs):
        return 1.01 * super().forward(inputs)


np.random.seed(0)
model = Net([RNN(num_hidden=16), ScaledDense(10)])

EXPECTED = {"reference": "tinynn_rnn_torch.py", "culprits": [{"layer": "layers.1", "pass": "forward"}], "hint": "1.01"}
