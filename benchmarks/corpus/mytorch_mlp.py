"""An MLP from custom-cnn's ``mytorch``: Linear weights (out, in) as torch's, GELU and Swish activations."""
import numpy as np
import mytorch.nn as nn

np.random.seed(0)


def make_model(gelu=nn.GELU, swish=nn.Swish, middle=nn.Linear):
    layers = [nn.Linear(20, 32), gelu(), middle(32, 32), swish(), nn.Linear(32, 10)]
    for layer in layers[::2]:  # mytorch's Linear starts at zero: the homework sets its weights
        layer.W, layer.b = np.random.randn(*layer.W.shape) / np.sqrt(layer.W.shape[1]), 0.1 * np.random.randn(*layer.b.shape)
    return layers


model = make_model()
loss = nn.CrossEntropyLoss()
input_shape = (16, 20)
targets = np.eye(10)[np.random.default_rng(1).integers(0, 10, size=16)]

