"""numpy-ml's Elman ``RNNCell`` stepped through a sequence, inputs (batch, features, time) as numpy-ml takes them.

numpy-ml's own ``RNN`` layer cannot be built (``RNN(16)`` raises: its ``gradients`` property has no setter), so
this steps the cell the way ``RNN.forward``/``RNN.backward`` mean to. The cell keeps hidden states, inputs and
gradients between calls until ``flush_gradients``; a new sequence starts from a flushed cell.
"""
import collections
import collections.abc

import numpy as np

collections.Hashable = collections.abc.Hashable  # compat: numpy-ml 0.1.2 imports it from collections (Python < 3.10)
from numpy_ml.neural_nets.layers import RNNCell

np.random.seed(0)


class SequenceRNN:
    def __init__(self, n_in, n_hidden):
        self.cell = RNNCell(n_hidden)
        self.cell.n_in = n_in  # the cell learns its input width on its first forward; this builds it now
        self.cell._init_params()

    def forward(self, X):
        self.cell.flush_gradients()
        self.cell.derived_variables["dLdA_accumulator"] = None  # compat: flush_gradients leaves [] there, and backward then raises
        return np.dstack([self.cell.forward(X[:, :, t]) for t in range(X.shape[2])])

    def backward(self, dY):
        return np.dstack([self.cell.backward(dY[:, :, t]) for t in reversed(range(dY.shape[2]))][::-1])


model = SequenceRNN(8, 16)
input_shape = (4, 8, 5)  # (batch, features, time)
