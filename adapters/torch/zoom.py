"""Zoom into one module of a ``torch.nn.Module``: every operation inside its forward, through a
``TorchFunctionMode`` that is active only while the module runs (its forward pre-hook enters it, its forward hook
leaves it). The module can be called with given inputs (the other side's) in place of its own."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from layerdiff.adapter import Feed, Op, Ops, Spec
from layerdiff.adapters.torch import forms


class _Recorder(TorchFunctionMode):
    """Each torch function called while active, with its first floating output and which earlier outputs it read."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []
        self.made: dict[int, tuple[torch.Tensor, int]] = {}  # id of a recorded output -> (it, its index or -1 - k)

    def note_input(self, t: torch.Tensor, k: int) -> None:
        self.made[id(t)] = (t, -1 - k)

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        first = next((t for t in _tensors(out) if t.is_floating_point() and t.numel() > 0), None)
        if first is None:
            return out
        reads = tuple(k for t in _tensors((args, kwargs)) if (k := self._index(t)) is not None)
        self.ops.append(Op(_name(func), first.detach().cpu().clone().numpy(), reads))
        self.made[id(first)] = (first, len(self.ops) - 1)
        return out

    def _index(self, t: torch.Tensor) -> int | None:
        known = self.made.get(id(t))
        return known[1] if known is not None and known[0] is t else None


def _name(func: Any) -> str:
    name = str(getattr(func, "__name__", func))
    if name == "__get__":  # a property that computes (Tensor.T, .mT)
        return str(getattr(getattr(func, "__self__", None), "__name__", "attribute"))
    return name.strip("_") or name


def _tensors(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [t for x in tree for t in _tensors(x)]
    if isinstance(tree, dict):
        return [t for x in tree.values() for t in _tensors(x)]
    return []


def zoom(net: torch.nn.Module, spec: Spec, feed: Feed, layer: str, inputs: list[np.ndarray] | None) -> Ops | None:
    """The operations of module ``layer`` of ``net`` ("" or "model": the whole network) in one forward pass, the
    module called with ``inputs`` when given; None when ``net`` has no such module."""
    modules = dict(net.named_modules())
    target = modules.get("" if layer == "model" else layer)
    if target is None:
        return None
    recorder = _Recorder()
    seen: list[np.ndarray] = []

    def enter(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Every tensor counts, however nested or passed by keyword (a mask), as the capture records them.
        given = forms.leaves((args, kwargs))
        floating = [i for i, a in enumerate(given) if a.is_floating_point()]
        for k, i in enumerate(floating):
            if inputs is not None and k < len(inputs) and tuple(inputs[k].shape) == tuple(given[i].shape):
                given[i] = torch.as_tensor(np.ascontiguousarray(inputs[k])).to(given[i].dtype)
            seen.append(given[i].detach().cpu().clone().numpy())
            recorder.note_input(given[i], k)
        recorder.__enter__()
        return forms.rebuild((args, kwargs), given)

    def leave(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        recorder.__exit__(None, None, None)

    dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float64)
    xs = [torch.as_tensor(np.ascontiguousarray(x)).to(dtype) if np.issubdtype(x.dtype, np.floating) else torch.as_tensor(x) for x in feed.inputs]
    handles = [target.register_forward_pre_hook(enter, with_kwargs=True), target.register_forward_hook(leave, with_kwargs=True)]
    try:
        with torch.no_grad():
            forms.call(net, xs, feed.names)
    finally:
        for h in handles:
            h.remove()
    return Ops(seen, recorder.ops)
