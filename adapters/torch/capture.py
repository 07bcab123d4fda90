"""Capture a ``torch.nn.Module`` for one iteration with forward hooks and full backward hooks.

Hooks only read: the loss and every gradient are bitwise the same as without them. Each value is cloned when
recorded, and in-place activations are switched off for the run (their values are identical) because autograd
forbids modifying a hooked module's output in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from layerdiff.adapter import Feed
from layerdiff.errors import ModelFileError, raised_in
from layerdiff.modelfile import Model
from layerdiff.records import LayerRecord, ParamRecord, Trace, tensor_key, unique_name
from layerdiff.tap import tapping


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().clone().numpy()


def _layout(module: torch.nn.Module, pname: str, ndim: int) -> str:
    if pname == "bias":
        return "out"
    if pname == "weight" and isinstance(module, torch.nn.Linear):
        return "out in"
    if pname == "weight" and isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        return {3: "O I W", 4: "O I H W", 5: "O I D H W"}[ndim]
    return ""


class Recorder:
    """Hooks and taps writing into one list of layer records, in the order the forward pass runs."""

    def __init__(self) -> None:
        self.records: list[LayerRecord] = []
        self.by_name: dict[str, LayerRecord] = {}
        self.calls: dict[int, list[LayerRecord]] = {}
        self.outputs: dict[str, Any] = {}

    def add(self, name: str, kind: str) -> LayerRecord:
        record = LayerRecord(unique_name(name, self.by_name), kind)
        self.by_name[record.name] = record
        self.records.append(record)
        return record

    def forward_hook(self, name: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            record = self.add(name, type(module).__name__)
            for i, t in enumerate(a for a in args if isinstance(a, torch.Tensor)):
                record.tensors[tensor_key("input", i)] = _array(t)
            outs = output if isinstance(output, tuple) else (output,)
            for i, t in enumerate(o for o in outs if isinstance(o, torch.Tensor)):
                record.tensors[tensor_key("output", i)] = _array(t)
            self.calls.setdefault(id(module), []).append(record)
            self.outputs[record.name] = output

        return hook

    def backward_hook(self, module: torch.nn.Module, grad_input: Any, grad_output: Any) -> None:
        pending = self.calls.get(id(module))
        if not pending:
            return
        record = pending.pop()  # backward visits a reused module's calls in reverse
        for kind, grads in (("grad_input", grad_input), ("grad_output", grad_output)):
            for i, g in enumerate(grads):
                if g is not None:
                    record.tensors[tensor_key(kind, i)] = _array(g)

    def tap(self, name: str, value: Any) -> Any:
        known = self.by_name.get(name)
        if known is not None and self.outputs.get(known.name) is value:
            record = known  # the module's own output, tapped under the module's name
        else:
            record = self.add(name, "tap")
            record.tensors["output"] = _array(value)
        if isinstance(value, torch.Tensor) and value.requires_grad:
            value.register_hook(lambda g: record.tensors.__setitem__("grad_output", _array(g)))
        return value

    def tap_grad(self, name: str, grad: Any) -> None:
        pass  # autograd reports the gradient of every tapped tensor


def _captured_modules(root: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Leaf modules, and modules holding parameters of their own beside children."""
    found = []
    for name, module in root.named_modules():
        if not any(True for _ in module.children()) or any(True for _ in module.parameters(recurse=False)):
            found.append((name or "model", module))
    return found


class TorchAdapter:
    name = "torch"

    def claims(self, obj: Any) -> bool:
        return isinstance(obj, torch.nn.Module)

    def version(self) -> str:
        return str(torch.__version__)

    def prepare(self, model: Model, dtype: str) -> None:
        if dtype == "float64":
            model.obj.double()
            if isinstance(model.loss, torch.nn.Module):
                model.loss.double()

    def parameters(self, model: Model) -> list[ParamRecord]:
        return _param_records(model.obj)

    def load_parameters(self, model: Model, values: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for full, p in model.obj.named_parameters():
                if full in values:
                    p.copy_(torch.from_numpy(np.ascontiguousarray(values[full])))

    def run(self, model: Model, feed: Feed) -> Trace:
        net: torch.nn.Module = model.obj
        dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float64)
        inputs = [_tensor(x, dtype, grad=True) for x in feed.inputs]
        recorder = Recorder()
        handles = []
        inplace = []
        for name, module in _captured_modules(net):
            handles.append(module.register_forward_hook(recorder.forward_hook(name)))
            handles.append(module.register_full_backward_hook(recorder.backward_hook))
            if getattr(module, "inplace", False) is True:
                inplace.append(module)
                module.inplace = False
        net.zero_grad(set_to_none=True)
        try:
            with tapping(recorder):
                loss_value, upstream = self._iterate(model, net, inputs, feed, dtype, recorder)
        finally:
            for h in handles:
                h.remove()
            for module in inplace:
                module.inplace = True
        params = _param_records(net)
        for r in recorder.records:
            r.params = [p.name for p in params if p.layer == r.name]
        return Trace(recorder.records, params, loss_value, upstream=upstream)

    def _iterate(
        self, model: Model, net: torch.nn.Module, inputs: list[torch.Tensor], feed: Feed, dtype: torch.dtype, recorder: Recorder
    ) -> tuple[float, list[np.ndarray]]:
        try:
            out = net(*inputs)
        except Exception as exc:
            raise raised_in(model.source, exc, "in its forward pass") from None
        outputs = list(out) if isinstance(out, (tuple, list)) else [out]
        if not all(isinstance(o, torch.Tensor) for o in outputs):
            raise ModelFileError(f"The model in {model.source} returned {type(out).__name__}; return a tensor or a tuple of tensors.")
        try:
            if model.loss is None:
                upstream = [feed.upstream(i, tuple(o.shape)) for i, o in enumerate(outputs)]
                grads = [torch.from_numpy(u).to(o.dtype) for u, o in zip(upstream, outputs)]
                torch.autograd.backward(outputs, grads)
                value = sum(float(torch.vdot(o.detach().reshape(-1), g.reshape(-1))) for o, g in zip(outputs, grads))
                return value, upstream
            logits = outputs[0]
            logits.retain_grad()
            targets = None if feed.targets is None else _tensor(feed.targets, dtype, grad=False)
            loss = model.loss(logits, targets)
            loss.backward()
        except Exception as exc:
            raise raised_in(model.source, exc, "in its loss or backward pass") from None
        record = recorder.add("loss", type(model.loss).__name__)
        record.tensors.update(
            input=_array(logits),
            output=_array(loss),
            grad_input=_array(logits.grad) if logits.grad is not None else np.zeros(logits.shape),
            grad_output=np.ones((), dtype=_array(loss).dtype),
        )
        return float(loss.detach()), []


def _param_records(net: torch.nn.Module) -> list[ParamRecord]:
    owners = {id(p): (path, m, n) for path, m in net.named_modules() for n, p in m.named_parameters(recurse=False)}
    records = []
    for full, p in net.named_parameters():
        path, module, pname = owners[id(p)]
        grad = None if p.grad is None else _array(p.grad)
        records.append(ParamRecord(full, path or "model", _layout(module, pname, p.ndim), _array(p), grad))
    return records


def _tensor(x: np.ndarray, dtype: torch.dtype, grad: bool) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.is_floating_point():
        t = t.to(dtype)
        if grad:
            t.requires_grad_(True)
    return t
