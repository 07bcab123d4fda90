"""Recording a PyTorch model inside the user's own training loop: the capture hooks attached to the live model for one
iteration, then removed.

The model is the user's, mid-training: nothing is cast or copied in, parameter values are snapshotted when the
recording starts (the weights the iteration ran with, before any optimizer step), and gradients are read when it
stops. The first call of the root module gives the inputs, and the gradient arriving at its output the upstream
gradient, so that a model file can later be run on exactly what this iteration saw.

Under ``torch.distributed`` each rank records its own shard: a ``DistributedDataParallel`` model's parameters are
replicated and its activations split over the batch; a ``DTensor`` parameter says its own placement.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from layerdiff.adapter import Spec
from layerdiff.capture import Forcer
from layerdiff.records import ParamRecord, Trace
from layerdiff.tap import tapping

from layerdiff.adapters.torch.capture import Recorder, _array, _captured_modules
from layerdiff.adapters.torch.layouts import gates_of, layout_of

BATCH = "shard(0)"  # a data-parallel rank's activations: its slice of the batch


class Attachment:
    """The hooks of one recording, live on the user's model until ``detach``."""

    def __init__(self, net: torch.nn.Module, spec: Spec, placements: dict[str, str] | None = None) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.data_parallel = isinstance(net, DistributedDataParallel)
        self.root: torch.nn.Module = net.module if self.data_parallel else net
        self.rank, self.world_size = _rank()
        self.declared = dict(placements or {})
        self.values = {name: _array(_local(p)) for name, p in self.root.named_parameters()}
        self.recorder = Recorder(Forcer(None))
        self.inputs: list[np.ndarray] | None = None
        self.upstream: list[np.ndarray | None] = []
        self.handles = [
            self.root.register_forward_pre_hook(self._root_inputs),
            self.root.register_forward_hook(self._root_outputs),
        ]
        self.inplace = []
        for name, module in _captured_modules(self.root):
            self.handles.append(module.register_forward_pre_hook(self.recorder.pre_hook, with_kwargs=True))
            self.handles.append(module.register_forward_hook(self.recorder.forward_hook(name), with_kwargs=True))
            if getattr(module, "inplace", False) is True:
                self.inplace.append(module)
                module.inplace = False  # the same values; an in-place module would overwrite what was recorded
        self.tapping = tapping(self.recorder)
        self.tapping.__enter__()

    def _root_inputs(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if self.inputs is None:
            self.inputs = [_array(a) for a in args if isinstance(a, torch.Tensor)]

    def _root_outputs(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self.upstream:
            return  # a second call in the same iteration: the first one's output gradient is the upstream
        outs = [o for o in (output if isinstance(output, (tuple, list)) else (output,)) if isinstance(o, torch.Tensor)]
        self.upstream = [None] * len(outs)
        for i, o in enumerate(outs):
            if o.requires_grad:
                o.register_hook(self._upstream_hook(i))

    def _upstream_hook(self, index: int) -> Any:
        def hook(g: torch.Tensor) -> None:
            self.upstream[index] = _array(g)

        return hook

    def detach(self) -> Trace:
        """Remove every hook, and hand over what the iteration recorded."""
        self.tapping.__exit__(None, None, None)
        for h in self.handles:
            h.remove()
        for module in self.inplace:
            module.inplace = True
        self.recorder.check()
        records = self.recorder.records
        if self.data_parallel:
            for r in records:
                r.placements = {k: BATCH for k in r.tensors}
        params = self._params()
        for r in records:
            r.params = [p.name for p in params if p.layer == r.name]
        upstream = [u for u in self.upstream if u is not None]
        return Trace(records, params, None, inputs=self.inputs or [], upstream=upstream)

    def _params(self) -> list[ParamRecord]:
        owners: dict[int, tuple[str, torch.nn.Module, str]] = {}
        for path, m in self.root.named_modules():
            for n, p in m.named_parameters(recurse=False):
                owners.setdefault(id(p), (path, m, n))
        found = []
        for full, p in self.root.named_parameters():
            path, module, pname = owners[id(p)]
            grad = None if p.grad is None else _array(_local(p.grad))
            placement = self.declared.get(full) or _placement(p) or ("replicate" if self.data_parallel else "")
            layout = layout_of(module, pname, p.ndim)
            found.append(ParamRecord(full, path or "model", layout, self.values[full], grad, placement, gates_of(module, pname)))
        return found


def _rank() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _local(t: torch.Tensor) -> torch.Tensor:
    """A ``DTensor``'s shard on this rank; any other tensor as it is."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def _placement(t: torch.Tensor) -> str:
    """A ``DTensor``'s placement on a one-dimensional mesh as layerdiff writes it: shard(d), replicate, partial."""
    placements = getattr(t, "placements", None)
    if not placements:
        return ""
    (p,) = placements[:1]
    if p.is_shard():
        return f"shard({p.dim})"
    return "partial" if p.is_partial() else "replicate"
