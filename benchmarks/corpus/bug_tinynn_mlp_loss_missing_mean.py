"""Bug: the softmax cross-entropy's gradient is not divided by the batch size (its value is)."""
import numpy as np
from tinynn.core.layer import Dense, ReLU, Sigmoid
from tinynn.core.loss import SoftmaxCrossEntropy
from tinynn.core.net import Net

from tinynn_mlp import input_shape, targets  # noqa: F401


class SumGradCrossEntropy(SoftmaxCrossEntropy):
    def grad(self, logits, labels):
        return super().grad(logits, labels) * labels.shape[0]


np.random.seed(0)
model = Net([Dense(32), ReLU(), Dense(32), Sigmoid(), Dense(10)])
loss = SumGradCrossEntropy()

EXPECTED = {"reference": "tinynn_mlp_torch.py", "culprits": [{"layer": "loss", "pass": "backward"}], "hint": "batch size"}
