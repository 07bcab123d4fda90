"""A CNN from custom-cnn's ``mytorch`` (the CMU 11-785 homework library): channels-first, torch-shaped weights.

Each layer writes forward and backward by hand and keeps gradients as ``dLdW``/``dLdb``; a strided Conv2d holds
its weights in a ``Conv2d_stride1`` inside it, followed by a ``Downsample2d``.
"""
import numpy as np
import mytorch.nn as nn
from mytorch.flatten import Flatten

np.random.seed(0)


def make_model(tanh=nn.Tanh):
    layers = [
        nn.Conv2d(3, 8, 3, 1, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(8, 8, 3, 2), tanh(), Flatten(), nn.Linear(32, 10),
    ]
    layers[-1].W = np.random.randn(10, 32) / np.sqrt(32)  # mytorch's Linear starts at zero
    return layers


model = make_model()
loss = nn.CrossEntropyLoss()
input_shape = (4, 3, 10, 10)
targets = np.eye(10)[np.random.default_rng(1).integers(0, 10, size=4)]  # one-hot, as mytorch's loss takes them



# custom-cnn's own defect: Conv2d.backward unpads its input gradient with [pad:-pad], which is empty for padding=0:
# the strided convolution (layer 3) returns an input gradient of shape (4, 8, 0, 0).
DEFECTS = [{"layer": "3", "pass": "backward"}]
