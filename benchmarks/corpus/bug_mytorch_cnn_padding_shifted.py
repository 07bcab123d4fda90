"""Bug: the first convolution pads 2 rows and columns before and none after, instead of 1 on each side."""
import numpy as np

from mytorch_cnn import input_shape, loss, make_model, targets  # noqa: F401

np.random.seed(0)
model = make_model()
conv = model[0]


def forward(A):
    padded = np.pad(A, ((0, 0), (0, 0), (2, 0), (2, 0)))
    return conv.downsample2d.forward(conv.conv2d_stride1.forward(padded))


conv.forward = forward

# Its backward (mytorch's, unpadding 1 on each side) no longer matches the forward either. Layer 3's empty input
# gradient is the package's own defect, declared with the clean pair.
EXPECTED = {"reference": "mytorch_cnn_torch.py", "culprits": [{"layer": "0", "pass": "forward"}, {"layer": "0", "pass": "backward"}], "hint": "moved by"}
