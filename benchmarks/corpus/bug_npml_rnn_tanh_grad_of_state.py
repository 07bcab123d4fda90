"""Bug: the RNN cell's backward takes tanh' of the hidden state instead of its pre-activation: 1 - tanh(a)^2 with a = tanh(z)."""
import numpy as np

from npml_rnn import SequenceRNN, input_shape  # noqa: F401

np.random.seed(0)
model = SequenceRNN(8, 16)
act = model.cell.act_fn
act.grad = lambda z: 1 - np.tanh(np.tanh(z)) ** 2

EXPECTED = {"reference": "npml_rnn_torch.py", "culprits": [{"layer": "model", "pass": "backward"}], "hint": None}
