"""The shapes values take in PyTorch code as people write it: inputs by keyword, outputs that are structures (a Hugging
Face ``ModelOutput``, a dict, a tuple nested in a tuple: ``nn.LSTM``'s ``(output, (h, c))``).

A structure is walked in a fixed order (sequences in order, mappings in their keys' order) and rebuilt with new
leaves in the same places, so that a module hook can record every tensor in it and hand on clones or forced values
without the code after the module seeing any difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator

import torch

from layerdiff.errors import ModelFileError


def leaves(obj: Any) -> list[torch.Tensor]:
    """Every tensor in ``obj``, in walking order.

    >>> [t.shape[0] for t in leaves((torch.zeros(2), (torch.zeros(3), None), {"c": torch.zeros(4)}))]
    [2, 3, 4]
    """
    found: list[torch.Tensor] = []
    _walk(obj, found.append)
    return found


def _walk(obj: Any, visit: Callable[[torch.Tensor], None]) -> None:
    if isinstance(obj, torch.Tensor):
        visit(obj)
    elif isinstance(obj, Mapping):
        for value in obj.values():
            _walk(value, visit)
    elif isinstance(obj, (tuple, list)):
        for value in obj:
            _walk(value, visit)


def rebuild(obj: Any, new: list[Any]) -> Any:
    """``obj`` with its tensors replaced, in walking order, by ``new``; the same object when nothing changed.

    >>> out = rebuild((torch.zeros(2), (torch.zeros(3), 5)), [torch.ones(2), torch.ones(3)])
    >>> [float(out[0][0]), float(out[1][0][0]), out[1][1]]
    [1.0, 1.0, 5]
    """
    replaced = iter(new)
    return _rebuilt(obj, replaced)


def _rebuilt(obj: Any, new: Iterator[Any]) -> Any:
    if isinstance(obj, torch.Tensor):
        return next(new)
    if isinstance(obj, Mapping):
        values = {k: _rebuilt(v, new) for k, v in obj.items()}
        if all(values[k] is v for k, v in obj.items()):
            return obj
        if type(obj) is dict:
            return values
        try:  # a ModelOutput (a dataclass over an OrderedDict), an OrderedDict
            return type(obj)(**values)
        except TypeError:
            return values
    if isinstance(obj, (tuple, list)):
        items = [_rebuilt(v, new) for v in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        if isinstance(obj, list):
            return items
        if hasattr(obj, "_fields"):  # a namedtuple (PackedSequence)
            return type(obj)(*items)
        return tuple(items)
    return obj


def call(net: torch.nn.Module, inputs: list[torch.Tensor], names: tuple[str, ...]) -> Any:
    """The model called as its file's inputs say: by keyword (``model(**inputs)``) or by position."""
    if names:
        return net(**dict(zip(names, inputs)))
    return net(*inputs)


def compared(out: Any, choice: str | int | None, source: str, own_loss: bool = False) -> list[torch.Tensor]:
    """The outputs that are compared (and receive the upstream gradient, or feed the loss).

    A tensor is one output; a tuple or list of tensors, each of them (two heads). Anything else (a ``ModelOutput``, a
    dict, a structure holding caches or None) gives its first floating tensor, ``logits`` before ``past_key_values``,
    unless ``choice`` (the file's ``output``) names a key or an index. A ``loss`` entry is never the compared output;
    with ``own_loss`` (the model returns its loss), neither is a tuple's first element.
    """
    if choice is not None:
        return [_chosen(out, choice, source)]
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        out = {k: v for k, v in out.items() if k != "loss"}
    elif own_loss and isinstance(out, (tuple, list)):
        out = out[1:]
    if isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) for o in out):
        return list(out)
    floating = [t for t in leaves(out) if t.is_floating_point()]
    if not floating:
        raise ModelFileError(
            f"The model in {source} returned {type(out).__name__} holding no floating-point tensor; return the tensor to "
            "compare, or name it with output = \"logits\"."
        )
    return floating[:1]


def _chosen(out: Any, choice: str | int, source: str) -> torch.Tensor:
    try:
        value = out[choice]
    except (KeyError, IndexError, TypeError):
        have = list(out.keys()) if isinstance(out, Mapping) else f"{len(out)} items" if isinstance(out, (tuple, list)) else type(out).__name__
        raise ModelFileError(f"output = {choice!r} in {source}, but the model's output has: {have}.") from None
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise ModelFileError(f"output = {choice!r} in {source} is {type(value).__name__}, not a floating-point tensor.")
    return value


def own_loss(out: Any, source: str) -> torch.Tensor:
    """The loss a model returns itself (``loss = "model"``): its ``loss`` entry, or its first element."""
    value = out.get("loss") if isinstance(out, Mapping) else out[0] if isinstance(out, (tuple, list)) and out else None
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ModelFileError(
            f"loss = \"model\" in {source}, but the model returned no loss (its output has "
            f"{list(out.keys()) if isinstance(out, Mapping) else type(out).__name__}). Pass the labels among the inputs "
            "(inputs = {..., \"labels\": ...}), or give the file a loss function."
        )
    return value


def uses_dropout(net: torch.nn.Module) -> list[str]:
    """The modules that would make two runs differ: dropouts with a nonzero rate, in training mode."""
    found = []
    for name, module in net.named_modules():
        p = getattr(module, "p", None)
        if module.training and isinstance(module, torch.nn.modules.dropout._DropoutNd) and isinstance(p, float) and p > 0:
            found.append(name or "model")
    return found
