"""tinynn's feed-forward net as its README builds one: ``Net`` of ``Dense`` layers and activations.

tinynn (PyPI ``tinynn``) writes each layer's forward and backward by hand, weights in ``params`` and gradients
in ``grads``; a Dense layer learns its input width on its first forward.
"""
import numpy as np
from tinynn.core.layer import Dense, ReLU, Sigmoid
from tinynn.core.loss import SoftmaxCrossEntropy
from tinynn.core.net import Net

np.random.seed(0)
model = Net([Dense(32), ReLU(), Dense(32), Sigmoid(), Dense(10)])
input_shape = (16, 20)
targets = np.eye(10)[np.random.default_rng(1).integers(0, 10, size=16)]  # tinynn's losses take one-hot labels
loss = SoftmaxCrossEntropy()

