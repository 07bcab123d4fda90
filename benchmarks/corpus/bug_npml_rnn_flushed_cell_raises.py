"""The numpy-ml defect left in: the cell is flushed before each sequence, as numpy-ml's own ``update`` does, and
its backward then raises (``flush_gradients`` leaves ``dLdA_accumulator = []``, and ``dLdAt + []`` cannot
broadcast). The layer whose backward raises is the network's only layer."""
import numpy as np

from npml_rnn import SequenceRNN, input_shape  # noqa: F401


class FlushedRNN(SequenceRNN):
    def forward(self, X):
        self.cell.flush_gradients()
        return np.dstack([self.cell.forward(X[:, :, t]) for t in range(X.shape[2])])


np.random.seed(0)
model = FlushedRNN(8, 16)

EXPECTED = {"reference": "npml_rnn_torch.py", "culprits": [{"layer": "model", "pass": "backward"}], "hint": None}
