"""Bug: BatchNorm1D's backward drops the -sum(dN) term (the gradient through the batch mean)."""
import numpy as np

from npml_mlp import MLP, input_shape  # noqa: F401
from numpy_ml.neural_nets.layers import BatchNorm1D


class NoMeanBatchNorm(BatchNorm1D):
    def _bwd(self, dLdy, X):
        dX, dScaler, dIntercept = super()._bwd(dLdy, X)
        dN = dLdy * self.parameters["scaler"]
        return dX + dN.sum(axis=0) / (X.shape[0] * np.sqrt(X.var(axis=0) + self.hyperparameters["epsilon"])), dScaler, dIntercept


model = MLP()
model.bn1 = model.layers[1] = NoMeanBatchNorm()

EXPECTED = {"reference": "npml_mlp_torch.py", "culprits": [{"layer": "bn1", "pass": "backward"}], "hint": "shifted by"}
