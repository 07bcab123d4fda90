"""Bug: the RNN's slot for the initial hidden state is overwritten by the last one after the forward pass (a reused
buffer), so backward takes h[-1] for h before step 0: only the recurrent half of W's gradient is wrong."""
import numpy as np
from tinynn.core.layer import RNN, Dense
from tinynn.core.net import Net

from tinynn_rnn import input_shape  # noqa: F401


class ReusedStateRNN(RNN):
    def forward(self, inputs):
        out = super().forward(inputs)
        self.ctx["h"][:, -1] = self.ctx["h"][:, -2]
        return out


np.random.seed(0)
model = Net([ReusedStateRNN(num_hidden=16), Dense(10)])

# layers.0 forward and backward (input gradient) also carry the float32 defect declared with the clean pair.
EXPECTED = {"reference": "tinynn_rnn_torch.py", "culprits": [{"layer": "layers.0", "pass": "param_grad"}], "hint": None}
