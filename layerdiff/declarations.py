"""What a model file may declare beside its model, checked as it is read: each value in the form the rest of
layerdiff takes, or one line saying what the file should write instead."""

from __future__ import annotations

from typing import Any

import numpy as np

from layerdiff.errors import ModelFileError

def inputs(value: Any, source: str) -> tuple[tuple[str, ...], list[np.ndarray]]:
    """The declared inputs as arrays, and their keywords when they are a dict (``model(**inputs)``).

    >>> names, arrays = inputs({"input_ids": [[1, 2]], "attention_mask": [[True, False]]}, "m.py")
    >>> names, [a.dtype.kind for a in arrays]
    (('input_ids', 'attention_mask'), ['i', 'b'])
    """
    if isinstance(value, dict) or (hasattr(value, "keys") and hasattr(value, "__getitem__") and not hasattr(value, "shape")):
        names = tuple(value.keys())
        if not all(isinstance(n, str) and n.isidentifier() for n in names):
            raise ModelFileError(f"`inputs` in {source} is a dict whose keys are not all keywords: {list(names)}.")
        return names, [_array(value[n], source, f"inputs[{n!r}]") for n in names]
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    return (), [_array(v, source, "inputs") for v in items]


def _array(value: Any, source: str, what: str) -> np.ndarray:
    """A framework tensor or array-like as a NumPy array of numbers (never an object array)."""
    if hasattr(value, "detach"):  # torch tensors; jax arrays convert through np.asarray
        value = value.detach().cpu()
    try:
        array = np.asarray(value)
    except Exception:
        array = np.asarray(None)
    if array.dtype.kind not in "biuf":
        raise ModelFileError(
            f"`{what}` in {source} holds {array.dtype} values, not numbers: give an array of numbers (or a list or "
            "dict of them)."
        )
    return array


def loss(value: Any, source: str) -> Any:
    """The loss as declared; the string ``"model"`` means the model returns its own (a Hugging Face model with labels)."""
    if isinstance(value, str) and value != "model":
        raise ModelFileError(
            f"`loss` in {source} is the string {value!r}: give a loss function or object, or loss = \"model\" for a model "
            "that returns its own loss."
        )
    return value


def output(value: Any, source: str) -> str | int | None:
    if value is None or (isinstance(value, (str, int)) and not isinstance(value, bool)):
        return value
    raise ModelFileError(
        f"`output` in {source} must name the part of the model's output to compare (output = \"logits\"), or give its "
        f"index (output = 0); got {type(value).__name__}."
    )


def gates(value: Any, source: str) -> dict[str, str]:
    """{layer: gate order}; the order is the file's own letters in PyTorch's order of the blocks, or a packed order.

    >>> gates({"lstm": "i f c o"}, "m.py")
    {'lstm': 'i f c o'}
    """
    if value is None:
        return {}
    ok = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    for order in value.values() if ok else []:
        letters = order.split()
        ok = ok and len(letters) in (3, 4) and len(set(letters)) == len(letters)
    if not ok:
        raise ModelFileError(
            f"`gates` in {source} must map a layer to its gate order, e.g. gates = {{'lstm': 'i f g o'}} (an LSTM's four "
            "gates) or {'gru': 'r z n'}; got " + repr(value)[:80] + "."
        )
    return dict(value)


def update_in_backward(value: Any, source: str) -> str | None:
    if value is None or (isinstance(value, str) and value.isidentifier()):
        return value
    raise ModelFileError(
        f"`update_in_backward` in {source} must name the learning-rate argument of the layers' backward, e.g. "
        f"update_in_backward = \"learning_rate\"; got {value!r}."
    )


def globs(value: Any, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(g, str) and g for g in items):
        raise ModelFileError(f"`ignore` in {source} must be a glob or a list of globs of layer names, e.g. ignore = ['*.dropout'].")
    return tuple(items)
