"""numpy-ml's Conv2D and Pool2D, channels-last as numpy-ml takes them, the ReLU fused into the convolution."""
import collections
import collections.abc

import numpy as np

collections.Hashable = collections.abc.Hashable  # compat: numpy-ml 0.1.2 imports it from collections (Python < 3.10)
from numpy_ml.neural_nets.layers import Conv2D, Flatten, FullyConnected, Pool2D

np.random.seed(0)


class CNN:
    def __init__(self):
        self.conv1 = Conv2D(8, (3, 3), pad="same", act_fn="ReLU")
        self.pool1 = Pool2D((2, 2), stride=2, mode="max")
        self.flatten = Flatten()
        self.fc = FullyConnected(10)
        self.layers = [self.conv1, self.pool1, self.flatten, self.fc]


model = CNN()
input_shape = (4, 8, 8, 3)

