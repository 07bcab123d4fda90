"""What hand-written NumPy layer packages keep in a layout that shapes cannot tell: a table to extend.

``LAYOUTS``: (the class that holds the parameter, a glob of its name) -> its axes, in ``layerdiff.layout``'s
names; a class matches its own entries and those of its bases, by full name, so that the table imports nothing.
A model file's ``layouts`` overrides it. ``CHANNELS_LAST``: classes whose activations are (N, H, W, C); a network
holding one has its activations laid out so, unless its file declares ``activation_layout``.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

LAYOUTS: dict[tuple[str, str], str] = {
    ("numpy_ml.neural_nets.layers.layers.Conv2D", "W"): "H W I O",
    ("numpy_ml.neural_nets.layers.layers.FullyConnected", "W"): "in out",
    ("numpy_ml.neural_nets.layers.layers.RNNCell", "W*"): "in out",
    ("tinynn.core.layer.Conv2D", "w"): "H W I O",
    ("tinynn.core.layer.Dense", "w"): "in out",
    ("mytorch.nn.linear.Linear", "W"): "out in",
    ("mytorch.nn.Conv2d.Conv2d_stride1", "W"): "O I H W",
}

CHANNELS_LAST = (
    "numpy_ml.neural_nets.layers.layers.Conv2D",
    "numpy_ml.neural_nets.layers.layers.Pool2D",
    "tinynn.core.layer.Conv2D",
    "tinynn.core.layer.MaxPool2D",
)


def _names(obj: Any) -> list[str]:
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in type(obj).__mro__]


def known_layout(owner: Any, key: str) -> str:
    """The table's layout of parameter ``key`` of ``owner``; "" when it does not know it."""
    for qualified in _names(owner):
        for (cls, pattern), axes in LAYOUTS.items():
            if cls == qualified and fnmatchcase(key, pattern):
                return axes
    return ""


def channels_last(obj: Any) -> bool:
    return any(name in CHANNELS_LAST for name in _names(obj))
