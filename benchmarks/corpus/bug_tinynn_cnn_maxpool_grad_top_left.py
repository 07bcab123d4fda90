"""Bug: the max-pool's backward sends each window's gradient to its top-left entry, not to its maximum."""
import numpy as np
from tinynn.core.layer import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from tinynn.core.net import Net

from tinynn_cnn import input_shape  # noqa: F401


class TopLeftMaxPool2D(MaxPool2D):
    def backward(self, grad):
        self.ctx["argmax"] = np.zeros_like(self.ctx["argmax"])
        return super().backward(grad)


np.random.seed(0)
model = Net([Conv2D(kernel=(3, 3, 3, 8)), ReLU(), TopLeftMaxPool2D(pool_size=(2, 2)),
             Conv2D(kernel=(3, 3, 8, 8)), ReLU(), Flatten(), Dense(10)])

EXPECTED = {"reference": "tinynn_cnn_torch.py", "culprits": [{"layer": "layers.2", "pass": "backward"}], "hint": "routed to different positions"}
