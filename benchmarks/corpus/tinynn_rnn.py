"""tinynn's RNN layer (returns the last hidden state) and a Dense head; inputs (batch, time, features)."""
import numpy as np
from tinynn.core.layer import RNN, Dense
from tinynn.core.net import Net

np.random.seed(0)
model = Net([RNN(num_hidden=16), Dense(10)])
input_shape = (4, 5, 8)


# tinynn's own defect: RNN keeps its pre-activations and hidden states in float32 buffers (`empty(...)`) and
# allocates its input gradient as float32 (`np.empty_like(X, dtype=np.float32)`).
# Its weight gradient sums products with those float32 hidden states (`self.ctx["h"]`): added after the isolation
# issue's layerdiff first reported parameter gradients beside input gradients.
DEFECTS = [{"layer": "layers.0", "pass": "forward"}, {"layer": "layers.0", "pass": "backward"}, {"layer": "layers.0", "pass": "param_grad"}]
