"""Bug: the last FullyConnected adds its bias twice in the forward pass (biases set nonzero, as after training)."""
import numpy as np

from npml_mlp import MLP, input_shape  # noqa: F401
from numpy_ml.neural_nets.layers import FullyConnected


class BiasTwice(FullyConnected):
    def _init_params(self):  # numpy-ml makes the weights on the first forward: the bias is set nonzero then
        super()._init_params()
        self.parameters["b"][:] = np.random.default_rng(2).normal(size=10)

    def _fwd(self, X):
        Y, Z = super()._fwd(X)
        return Y + self.parameters["b"], Z + self.parameters["b"]


model = MLP()
model.fc3 = model.layers[3] = BiasTwice(10)

EXPECTED = {"reference": "npml_mlp_torch.py", "culprits": [{"layer": "fc3", "pass": "forward"}], "hint": "a bias differs"}
