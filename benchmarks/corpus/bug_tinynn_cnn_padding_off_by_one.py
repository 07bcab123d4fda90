"""Bug: the second convolution pads (0, 2) instead of (1, 1) on each spatial axis: its window moves by a pixel."""
import numpy as np
from tinynn.core.layer import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from tinynn.core.net import Net

from tinynn_cnn import input_shape  # noqa: F401

np.random.seed(0)
conv2 = Conv2D(kernel=(3, 3, 8, 8))
conv2.padding = ((0, 0), (0, 2), (0, 2), (0, 0))  # tinynn computes it on the first forward only when it is None
model = Net([Conv2D(kernel=(3, 3, 3, 8)), ReLU(), MaxPool2D(pool_size=(2, 2)), conv2, ReLU(), Flatten(), Dense(10)])

# layers.3 is wrong forward (window moved) and backward (the gradient of the moved window); the float32 buffers of
# tinynn's Conv2D and MaxPool2D are the package's own defects, declared with the clean pair.
EXPECTED = {"reference": "tinynn_cnn_torch.py", "culprits": [{"layer": "layers.3", "pass": "forward"}, {"layer": "layers.3", "pass": "backward"}], "hint": "moved by"}
