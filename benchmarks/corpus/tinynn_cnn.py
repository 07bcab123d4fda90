"""A small tinynn CNN, channels-last as tinynn's Conv2D and MaxPool2D take it: kernels (kh, kw, in, out)."""
import numpy as np
from tinynn.core.layer import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from tinynn.core.net import Net

np.random.seed(0)
model = Net([
    Conv2D(kernel=(3, 3, 3, 8)), ReLU(), MaxPool2D(pool_size=(2, 2)),
    Conv2D(kernel=(3, 3, 8, 8)), ReLU(), Flatten(), Dense(10),
])
input_shape = (4, 8, 8, 3)


# tinynn's own defect (tinynn/core/layer.py): Conv2D's im2col buffer, MaxPool2D's output and both layers' input
# gradients are allocated float32 (`empty(...)` defaults to np.float32; `np.zeros(..., dtype=np.float32)`), so a
# float64 network is rounded to float32 there. Where it shows: conv forward, pool forward, conv input gradients.
# The same buffers round the first convolution's weight gradient (computed from its float32 im2col columns): added
# after the isolation issue's layerdiff first reported parameter gradients beside input gradients.
DEFECTS = [{"layer": "layers.0", "pass": "forward"}, {"layer": "layers.2", "pass": "forward"},
           {"layer": "layers.3", "pass": "backward"}, {"layer": "layers.0", "pass": "backward"},
           {"layer": "layers.0", "pass": "param_grad"}]
