"""What a model file declares beside its model (``inputs``, ``input_shape``, ``targets``, ``param_map``,
``layouts``), checked and put in the form the rest of layerdiff uses.

Each function takes the value as the file (or the Python API) gave it and the file's name, and raises
ModelFileError saying what was expected, what was found and where. Inputs must be finite: NaN compared to NaN says
nothing about either side, and a comparison that runs on them reports two broken networks as the same.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np

from layerdiff.errors import ModelFileError

NUMBERS = "biufc"


def arrays(value: Any, source: str, name: str = "inputs") -> list[np.ndarray]:
    """``inputs``: an array or a list (tuple) of arrays, of numbers, all finite.

    >>> [a.shape for a in arrays([np.zeros((2, 3)), np.ones(4)], "a.py")]
    [(2, 3), (4,)]
    """
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        found = [np.asarray(_numpy(v)) for v in items]
    except Exception:
        raise ModelFileError(f"`{name}` in {source} must be an array or a list of arrays.") from None
    for i, a in enumerate(found):
        where = f"`{name}`" if len(found) == 1 else f"`{name}[{i}]`"
        _numeric(a, where, source)
        _finite(a, where, source)
    return found


def targets(value: Any, source: str) -> np.ndarray:
    """``targets``: an array of numbers (class indices, or finite values)."""
    try:
        found = np.asarray(_numpy(value))
    except Exception:
        raise ModelFileError(f"`targets` in {source} must be an array.") from None
    _numeric(found, "`targets`", source)
    _finite(found, "`targets`", source)
    return found


def shapes(value: Any, source: str) -> list[tuple[int, ...]]:
    """``input_shape``: a tuple of positive whole numbers, or a list of them, small enough to hold in memory.

    >>> shapes((8, 16), "a.py"), shapes([(8, 16), (8,)], "a.py")
    ([(8, 16)], [(8, 16), (8,)])
    """
    listed = value if isinstance(value, list) else [value]
    expected = f"`input_shape` in {source} must be a tuple of whole numbers such as (8, 16), or a list of them"
    found = []
    for s in listed:
        if isinstance(s, (str, bytes)) or not hasattr(s, "__iter__"):
            raise ModelFileError(f"{expected}; got {_shown(value)}.")
        dims = list(s)
        bad = next((d for d in dims if isinstance(d, bool) or not isinstance(d, numbers.Integral)), None)
        if bad is not None:
            raise ModelFileError(f"{expected}; got {_shown(value)}, where {_shown(bad)} is not a whole number.")
        found.append(tuple(int(d) for d in dims))
    if any(d <= 0 for s in found for d in s):
        raise ModelFileError(f"`input_shape` in {source} has a non-positive dimension: {value}.")
    values = sum(math.prod(s) for s in found)
    memory = _memory()
    if memory is not None and values * 8 > memory:
        raise ModelFileError(
            f"`input_shape` in {source} is {_shown(value)}: {values:.3g} values, {_bytes(values * 8)} in float64, "
            f"more than this machine's {_bytes(memory)} of memory. Give the shape of one small batch, such as (8, 16)."
        )
    return found


def mapping(value: Any, name: str, source: str) -> dict[str, str]:
    """``param_map``, ``layer_map`` or ``layouts``: a dict from names to names (axes); None for none.

    >>> mapping({"fc1.W": "fc1.weight"}, "param_map", "a.py")
    {'fc1.W': 'fc1.weight'}
    """
    if value is None:
        return {}
    examples = {"param_map": "{'fc1.W': 'fc1.weight'}", "layouts": "{'fc1.W': 'out in'}", "layer_map": "{'fc1': 'layers.0'}"}
    example = examples.get(name, "{'a': 'b'}")
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        patterns = " (a key 're:PATTERN' for every name it matches)" if name != "layouts" else ""
        raise ModelFileError(
            f"`{name}` in {source} must be a dict from names to names, such as {example}"
            f"{patterns}; got {_shown(value)}."
        )
    return dict(value)


def _numpy(value: Any) -> Any:
    """Framework tensors declared as inputs become arrays (torch tensors and jax arrays both have these)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return np.asarray(value)


def _numeric(a: np.ndarray, where: str, source: str) -> None:
    if a.dtype.kind not in NUMBERS:
        raise ModelFileError(f"{where} in {source} holds {a.dtype} values, not numbers (a ragged list?). Give an array of numbers.")


def _finite(a: np.ndarray, where: str, source: str) -> None:
    if a.dtype.kind not in "fc" or bool(np.isfinite(a).all()):
        return
    bad = ~np.isfinite(a)
    first = tuple(int(i) for i in np.argwhere(bad)[0]) if a.ndim else ()
    at = f" (the first at [{', '.join(map(str, first))}])" if first else ""
    raise ModelFileError(
        f"{where} in {source} holds {int(bad.sum())} NaN or infinite value(s){at}: no comparison can judge a network "
        "on them (NaN against NaN says nothing about either side). Give finite values."
    )


def _memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} bytes"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
