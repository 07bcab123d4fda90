"""Capture a ``torch.nn.Module`` for one iteration with forward hooks and full backward hooks.

Hooks only read: the loss and every gradient are bitwise the same as without them. Each value is cloned when
recorded, and in-place activations are switched off for the run (their values are identical) because autograd
forbids modifying a hooked module's output in place.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from layerdiff.adapter import Feed, Forcing
from layerdiff.errors import ModelFileError, raised_in
from layerdiff.modelfile import Model
from layerdiff.records import LayerRecord, ParamRecord, Trace, tensor_key, unique_name
from layerdiff.tap import tapping


RECENT = 16  # tensors a recorder remembers having copied


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().clone().numpy()


def _from(a: np.ndarray) -> torch.Tensor:
    """A tensor on ``a``'s memory, copied first only when torch cannot share it (read-only views of JAX arrays,
    transposed views)."""
    return torch.from_numpy(np.require(a, requirements=["C", "W"]))


def _shared(t: torch.Tensor) -> np.ndarray:
    """A parameter or its gradient without a copy (on the CPU): autograd never writes into a parameter, and each
    backward after ``zero_grad(set_to_none=True)`` makes new gradient tensors, so what was recorded stays as it was."""
    return t.detach().cpu().numpy()


def _layout(module: torch.nn.Module, pname: str, ndim: int) -> str:
    if pname == "bias":
        return "out"
    if pname == "weight" and isinstance(module, torch.nn.Linear):
        return "out in"
    if pname == "weight" and isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        return {3: "O I W", 4: "O I H W", 5: "O I D H W"}[ndim]
    return ""


class Recorder:
    """Hooks and taps writing into one list of layer records, in the order the forward pass runs.

    In a replay, a forced layer records its own output and then hands on the forced value; gradients still flow
    through it (``own + (forced - own).detach()``), so that its backward runs, on the forced upstream gradient.
    """

    def __init__(self, forcing: Forcing) -> None:
        self.forcing = forcing
        self.records: list[LayerRecord] = []
        self.by_name: dict[str, LayerRecord] = {}
        self.calls: dict[int, list[LayerRecord]] = {}
        self.outputs: dict[str, Any] = {}
        self.copies: dict[tuple[Any, ...], tuple[torch.Tensor, np.ndarray]] = {}

    def copy(self, t: torch.Tensor) -> np.ndarray:
        """``t`` as a NumPy copy, made once however many records take it: a module's input is most often the output
        the module before it recorded (the same memory at the same version: nothing wrote into it in between)."""
        # By memory, not object: the backward hooks hand the next module a view of the output the forward hook saw.
        key = (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t._version)
        hit = self.copies.get(key)
        if hit is not None:
            return hit[1]
        value = _array(t)
        self.copies[key] = (t, value)  # the tensor is held, so that its memory is not another's while remembered
        if len(self.copies) > RECENT:
            del self.copies[next(iter(self.copies))]
        return value

    def add(self, name: str, kind: str) -> LayerRecord:
        record = LayerRecord(unique_name(name, self.by_name), kind)
        self.by_name[record.name] = record
        self.records.append(record)
        return record

    def forward_hook(self, name: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            record = self.add(name, type(module).__name__)
            for i, t in enumerate(a for a in args if isinstance(a, torch.Tensor)):
                record.tensors[tensor_key("input", i)] = self.copy(t)
            outs = output if isinstance(output, tuple) else (output,)
            for i, t in enumerate(o for o in outs if isinstance(o, torch.Tensor)):
                record.tensors[tensor_key("output", i)] = self.copy(t)
            self.calls.setdefault(id(module), []).append(record)
            forced = self.forced_output(record.name, output)
            self.outputs[record.name] = output if forced is None else forced
            return forced

        return hook

    def forced_output(self, name: str, output: Any) -> Any:
        values = self.forcing.outputs.get(name)
        outs = output if isinstance(output, tuple) else (output,)
        if values is None or len(values) != len(outs) or any(tuple(v.shape) != tuple(o.shape) for v, o in zip(values, outs)):
            return None
        replaced = tuple(o + (_from(v).to(o.dtype) - o).detach() for v, o in zip(values, outs))
        return replaced if isinstance(output, tuple) else replaced[0]

    def forced_grads(self, name: str, grads: tuple[Any, ...]) -> tuple[Any, ...] | None:
        values = self.forcing.grad_outputs.get(name)
        if values is None or len(values) != len(grads) or any(g is None or tuple(v.shape) != tuple(g.shape) for v, g in zip(values, grads)):
            return None
        return tuple(_from(v).to(g.dtype) for v, g in zip(values, grads))


    def backward_pre_hook(self, module: torch.nn.Module, grad_output: Any) -> Any:
        """Records the gradient arriving at the module's output; in a replay, replaces it."""
        pending = self.calls.get(id(module))
        if not pending:
            return None
        record = pending[-1]  # backward visits a reused module's calls in reverse
        for i, g in enumerate(grad_output):
            if g is not None:
                record.tensors[tensor_key("grad_output", i)] = self.copy(g)
        return self.forced_grads(record.name, tuple(grad_output))

    def backward_hook(self, module: torch.nn.Module, grad_input: Any, grad_output: Any) -> None:
        pending = self.calls.get(id(module))
        if not pending:
            return
        record = pending.pop()
        for i, g in enumerate(grad_input):
            if g is not None:
                record.tensors[tensor_key("grad_input", i)] = self.copy(g)

    def tap(self, name: str, value: Any) -> Any:
        known = self.by_name.get(name)
        if known is not None and _same_tensor(self.outputs.get(known.name), value):
            return value  # the module's own output, tapped under the module's name: recorded (and forced) already
        record = self.add(name, "tap")
        record.tensors["output"] = self.copy(value)
        forced = self.forced_output(record.name, value)
        value = value if forced is None else forced
        if isinstance(value, torch.Tensor) and value.requires_grad:

            def arrived(g: torch.Tensor) -> torch.Tensor | None:
                record.tensors["grad_output"] = self.copy(g)
                replaced = self.forced_grads(record.name, (g,))
                return None if replaced is None else replaced[0]

            value.register_hook(arrived)
        return value

    def tap_grad(self, name: str, grad: Any) -> Any:
        return grad  # autograd reports the gradient of every tapped tensor


def _same_tensor(x: Any, y: Any) -> bool:
    """The same values in the same memory: a backward hook hands on its module's output as a new tensor object."""
    return (
        isinstance(x, torch.Tensor)
        and isinstance(y, torch.Tensor)
        and x.shape == y.shape
        and x.data_ptr() == y.data_ptr()
    )


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
                    p.copy_(_from(values[full]))

    def run(self, model: Model, feed: Feed, forcing: Forcing | None = None) -> Trace:
        net: torch.nn.Module = model.obj
        dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float64)
        inputs = [_tensor(x, dtype, grad=True) for x in feed.inputs]
        recorder = Recorder(forcing or Forcing())
        handles = []
        inplace = []
        for name, module in _captured_modules(net):
            handles.append(module.register_forward_hook(recorder.forward_hook(name)))
            handles.append(module.register_full_backward_pre_hook(recorder.backward_pre_hook))
            handles.append(module.register_full_backward_hook(recorder.backward_hook))
            if getattr(module, "inplace", False) is True:
                inplace.append(module)
                module.inplace = False
        net.zero_grad(set_to_none=True)
        try:
            with tapping(recorder), warnings.catch_warnings():
                # Our own hooks on a module whose inputs need no gradient (an embedding's token ids).
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
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
                grads = [_from(u).to(o.dtype) for u, o in zip(upstream, outputs)]
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
    # A tied parameter belongs to the first module that holds it (the embedding, not the output head).
    owners: dict[int, tuple[str, torch.nn.Module, str]] = {}
    for path, m in net.named_modules():
        for n, p in m.named_parameters(recurse=False):
            owners.setdefault(id(p), (path, m, n))
    records = []
    for full, p in net.named_parameters():
        path, module, pname = owners[id(p)]
        grad = None if p.grad is None else _shared(p.grad)
        records.append(ParamRecord(full, path or "model", _layout(module, pname, p.ndim), _shared(p), grad))
    return records


def _tensor(x: np.ndarray, dtype: torch.dtype, grad: bool) -> torch.Tensor:
    t = _from(x)
    if t.is_floating_point():
        t = t.to(dtype)
        if grad:
            t.requires_grad_(True)
    return t
