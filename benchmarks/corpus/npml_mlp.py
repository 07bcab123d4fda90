"""numpy-ml's layers as its users stack them: FullyConnected with the activation fused in, BatchNorm1D.

numpy-ml (PyPI ``numpy-ml``) writes every layer's forward and backward by hand; a layer keeps its weights in
``parameters`` and their gradients in ``gradients``, and builds them on its first forward (the input width is
known only then).
"""
import collections
import collections.abc

import numpy as np

collections.Hashable = collections.abc.Hashable  # compat: numpy-ml 0.1.2 imports it from collections (Python < 3.10)
from numpy_ml.neural_nets.layers import BatchNorm1D, FullyConnected

np.random.seed(0)


class MLP:
    def __init__(self):
        self.fc1 = FullyConnected(32, act_fn="ReLU")
        self.bn1 = BatchNorm1D()
        self.fc2 = FullyConnected(32, act_fn="Tanh")
        self.fc3 = FullyConnected(10)
        self.layers = [self.fc1, self.bn1, self.fc2, self.fc3]


model = MLP()
input_shape = (16, 20)
