"""Capture a ``torch.nn.Module`` for one iteration with forward hooks and tensor hooks.

Each value is copied once, when it is recorded, and only where it can still change:
- a module's output is copied to NumPy as the forward hook sees it (code after the module may modify it in place, a
  ResNet's ``out += identity``), and the same tensor is handed on; its gradient hook is registered before anything
  downstream runs, and autograd hands a hook registered before an in-place change the gradient of the value from
  before it, so the recorded output gradient is the module's own;
- a module's input is most often the output the module before it recorded, untouched since (``Recorder.copy``);
- each call gets an alias of its inputs (``aten.alias``: no copy, and its backward hands the gradient on as it is),
  so that the gradient reaching it is this call's input gradient alone, not the sum over every consumer of the
  tensor; a leaf (the model's own input) gets a clone instead, which the module may still modify in place;
- a gradient is not copied: autograd hands each hook a tensor of its own, which nothing writes into afterwards
  (``Recorder.gradient`` says why, and checks it); one record serves the two layers it is most often in (one
  module's output gradient, the next one's input gradient: the aliases hand the same tensor on).
Nothing recorded changes the numbers: the loss and every gradient are bitwise the same as without capture.
In-place activation modules are switched to out-of-place for the run (same values), since they would overwrite
the input a call recorded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from layerdiff.adapter import Feed, Forcing, Prepared, Spec
from layerdiff.adapters.torch import forms
from layerdiff.adapters.torch.layouts import gates_of, layout_of
from layerdiff.capture import Forcer, finish, loss_record, seeded_upstream
from layerdiff.errors import ModelFileError, raised_in
from layerdiff.records import LayerRecord, ParamRecord, Trace, tensor_key, unique_name
from layerdiff.tap import tapping

from layerdiff.adapters.torch import compiled


def _array(t: torch.Tensor) -> np.ndarray:
    """A NumPy copy of ``t``, the record's own."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        # NumPy has no bfloat16: its values are recorded in float32, which holds every one of them exactly.
        return t.float().cpu().numpy()
    if t.device.type != "cpu":
        return t.cpu().numpy()  # the copy to the host is already a copy of its own
    # NumPy's copy runs on one thread: a torch clone splits even a small copy over the intra-op threads, and
    # waits for all of them on a busy machine.
    return np.array(t.numpy(), copy=True)


def _alias(t: torch.Tensor) -> torch.Tensor:
    """A tensor of its own in the graph for one module call, on the same memory; a leaf is cloned, so that the
    module may modify it in place (autograd refuses that on a view of a leaf)."""
    return t.clone() if t.is_leaf else torch.ops.aten.alias.default(t)


RECENT = 16  # outputs a recorder remembers having copied


def _from(a: np.ndarray) -> torch.Tensor:
    """A tensor on ``a``'s memory, copied first only when torch cannot share it (read-only views of JAX arrays,
    transposed views)."""
    return torch.from_numpy(np.require(a, requirements=["C", "W"]))


def _shared(t: torch.Tensor) -> np.ndarray:
    """A parameter or its gradient without a copy (on the CPU): autograd never writes into a parameter, and each
    backward after ``zero_grad(set_to_none=True)`` makes new gradient tensors, so what was recorded stays as it was."""
    return _array(t) if t.dtype == torch.bfloat16 else t.detach().cpu().numpy()


class Recorder:
    """Hooks and taps writing into one list of layer records, in the order the forward pass runs.

    In a replay, a forced layer records its own output and then hands on the forced value; gradients still flow
    through it (``own + (forced - own).detach()``), so that its backward runs, on the forced upstream gradient.
    """

    def __init__(self, forcer: Forcer) -> None:
        self.forcer = forcer
        self.records: list[LayerRecord] = []
        self.by_name: dict[str, LayerRecord] = {}
        self.inputs: dict[int, list[list[np.ndarray]]] = {}  # per module, a stack of calls in progress
        self.given: dict[int, list[list[torch.Tensor]]] = {}  # the tensors each of those calls was handed
        self.outputs: dict[str, Any] = {}
        self.handed: dict[int, tuple[torch.Tensor, int, np.ndarray]] = {}  # recent outputs handed on, with their copy
        self.watched: list[tuple[torch.Tensor, int, str, str]] = []  # gradients recorded without a copy, as they were

    def copy(self, t: torch.Tensor) -> np.ndarray:
        """``t`` as a NumPy copy, made once when it is an output just handed on unchanged (a module's input is most
        often the output the module before it recorded)."""
        known = self.handed.get(id(t))
        if known is not None and known[0] is t and known[1] == t._version:
            return known[2]
        return _array(t)

    def gradient(self, g: torch.Tensor, layer: str, key: str) -> np.ndarray:
        """A gradient autograd hands a hook, recorded without a copy on the CPU: autograd makes each one anew and never
        writes into one that is still referenced (it accumulates in place only into a gradient nobody else holds),
        and its hooks and custom backwards must not modify their argument (PyTorch's contract: the same tensor often
        goes to two branches). ``check`` refuses a run that broke it, since the record would be wrong."""
        known = self.handed.get(id(g))
        if known is not None and known[0] is g and known[1] == g._version:
            return known[2]
        if g.device.type != "cpu" or g.dtype == torch.bfloat16:
            return _array(g)
        self.watched.append((g, g._version, layer, key))
        return g.detach().numpy()

    def check(self) -> None:
        """Refuse a run in which the model's own code changed a gradient in place after layerdiff recorded it."""
        changed = [(layer, key) for g, version, layer, key in self.watched if g._version != version]
        self.watched.clear()
        if changed:
            layer, key = changed[0]
            raise ModelFileError(
                f"The {key} of layer '{layer}' was modified in place after autograd handed it on (by a tensor hook or a "
                "custom autograd Function's backward). PyTorch's hooks and backwards must not modify their argument, "
                "which autograd may hand to other branches as well: return a new tensor instead."
            )

    def hand_on(self, t: torch.Tensor, value: np.ndarray) -> None:
        # The tensor is held with its copy, so that its id is not another's while remembered.
        self.handed[id(t)] = (t, t._version, value)
        if len(self.handed) > RECENT:
            del self.handed[next(iter(self.handed))]

    def add(self, name: str, kind: str) -> LayerRecord:
        record = LayerRecord(unique_name(name, self.by_name), kind)
        self.by_name[record.name] = record
        self.records.append(record)
        return record

    def pre_hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Recorded before the module runs: a module may modify its input in place. Every tensor counts, however
        # nested (nn.LSTM's (x, (h, c))) or passed by keyword (a mask).
        given = forms.leaves((args, kwargs))
        self.inputs.setdefault(id(module), []).append([self.copy(t) for t in given])
        own = [_alias(t) if t.requires_grad else t for t in given]
        # The input gradient is read on these aliases, upstream of the module's own full backward hooks (which
        # wrap its inputs after every pre-hook): what they make of it is what flows on, and what is recorded.
        self.given.setdefault(id(module), []).append(own)
        if all(a is b for a, b in zip(own, given)):
            return None
        return forms.rebuild((args, kwargs), own)

    def forward_hook(self, name: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            record = self.add(name, type(module).__name__)
            for i, value in enumerate(self.inputs[id(module)].pop()):
                record.tensors[tensor_key("input", i)] = value
            given = self.given[id(module)].pop()
            for i, t in enumerate(given):
                if t.requires_grad:
                    t.register_hook(self._recorder(record, tensor_key("grad_input", i)))
            outs = forms.leaves(output)
            forced = self._forced(record.name, tuple(outs))
            passed = []
            for i, o in enumerate(outs):
                value = record.tensors[tensor_key("output", i)] = self.copy(o)
                if any(o is t for t in (*given, *forms.leaves((args, kwargs)))) or self.recorded(o):
                    # A module that returns its input (an eval-mode Dropout, an Identity), or a child's output that
                    # its parent returns: its output gets a tensor of its own, downstream of the other's hooks, so
                    # that its forced output gradient reaches them, not beside them.
                    o = torch.ops.aten.alias.default(o)
                force = None if forced is None else forced[i]
                if o.requires_grad:
                    o.register_hook(self._recorder(record, tensor_key("grad_output", i), i))
                    o_passed = o if force is None else o + (force - o).detach()
                else:
                    o_passed = o if force is None else force
                if force is None:
                    self.hand_on(o_passed, value)
                passed.append(o_passed)
            result = forms.rebuild(output, passed)
            self.outputs[record.name] = result
            return result

        return hook

    def recorded(self, t: torch.Tensor) -> bool:
        """Whether ``t`` is an output already handed on, as it was then."""
        known = self.handed.get(id(t))
        return known is not None and known[0] is t

    def _forced(self, name: str, like: tuple[Any, ...]) -> list[torch.Tensor | None] | None:
        """The forced outputs of a layer, as tensors like its own (None for one the other side lacks), or None when
        it is not forced (or not alike)."""
        tensors = [t for t in like if isinstance(t, torch.Tensor)]
        values = self.forcer.some("output", name, [tuple(t.shape) for t in tensors])
        return None if values is None else [None if v is None else _from(v).to(t) for v, t in zip(values, tensors)]

    def _recorder(self, record: LayerRecord, key: str, forced_index: int | None = None) -> Any:
        """A tensor hook recording the gradient as it arrives; for an output in a replay, replacing it."""

        def hook(g: torch.Tensor) -> torch.Tensor | None:
            # An alias's backward hands the same gradient tensor on: one record serves both layers.
            record.tensors[key] = self.gradient(g, record.name, key)
            self.hand_on(g, record.tensors[key])
            if forced_index is None:
                return None
            value = self.forcer.value("grad_output", record.name, forced_index, tuple(g.shape))
            return None if value is None else _from(value).to(g)

        return hook

    def tap(self, name: str, value: Any) -> Any:
        known = self.by_name.get(name)
        if known is not None and self.outputs.get(known.name) is value:
            return value  # the module's own output, tapped under the module's name: recorded (and forced) already
        record = self.add(name, "tap")
        copied = record.tensors["output"] = self.copy(value)
        forced = self._forced(record.name, (value,))
        given = None if forced is None else forced[0]
        if self.recorded(value):
            value = torch.ops.aten.alias.default(value)  # a module's output: its own hooks fire after the tap's
        if value.requires_grad:
            value.register_hook(self._recorder(record, "grad_output", 0))
            value = value if given is None else value + (given - value).detach()
        elif given is not None:
            value = given
        if given is None:
            self.hand_on(value, copied)
        return value

    def tap_grad(self, name: str, grad: Any) -> Any:
        return grad  # autograd reports the gradient of every tapped tensor


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

    def prepare(self, obj: Any, spec: Spec, dtype: str) -> Prepared:
        dropouts = forms.uses_dropout(obj)
        if dropouts:
            shown = ", ".join(dropouts[:4]) + (f" and {len(dropouts) - 4} more" if len(dropouts) > 4 else "")
            raise ModelFileError(
                f"The model in {spec.source} is in training mode with dropout active ({shown}): two runs would differ. "
                "Call model.eval() in the model file (a model built from a config, as Hugging Face's are, starts in "
                "training mode)."
            )
        if dtype == "float64":
            obj.double()
            if isinstance(spec.loss, torch.nn.Module):
                spec.loss.double()
        return Prepared(obj)

    def parameters(self, model: Any, spec: Spec) -> list[ParamRecord]:
        return _param_records(_eager(model), spec, copies=True)

    def load_parameters(self, model: Any, spec: Spec, values: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for full, p in _eager(model).named_parameters():
                if full in values:
                    p.copy_(_from(values[full]))

    def attach(self, model: Any, spec: Spec, placements: dict[str, str] | None = None) -> Any:
        """Record one iteration of the user's own loop (``layerdiff.record``)."""
        from layerdiff.adapters.torch.record import Attachment

        return Attachment(model, spec, placements)

    def run(self, model: Any, spec: Spec, feed: Feed, forcing: Forcing | None = None) -> Trace:
        net: torch.nn.Module = _eager(model)
        dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float64)
        inputs = [_tensor(x, dtype, grad=True).to(_device(net)) for x in feed.inputs]
        forcer = Forcer(forcing)
        recorder = Recorder(forcer)
        handles = []
        inplace = []
        for name, module in _captured_modules(net):
            handles.append(module.register_forward_pre_hook(recorder.pre_hook, with_kwargs=True))
            handles.append(module.register_forward_hook(recorder.forward_hook(name), with_kwargs=True))
            if getattr(module, "inplace", False) is True:
                inplace.append(module)
                module.inplace = False
        net.zero_grad(set_to_none=True)
        try:
            with tapping(recorder):
                loss_value, upstream = _iterate(spec, net, inputs, feed, dtype, recorder)
        finally:
            for h in handles:
                h.remove()
            for module in inplace:
                module.inplace = True
            # The tensors the recorder holds carry hooks that hold the recorder: a cycle through torch's own
            # storage, which Python's collector does not see. Let go of them, or each run keeps its records.
            recorder.outputs.clear()
            recorder.handed.clear()
        recorder.check()
        trace = finish(recorder.records, _param_records(net, spec, copies=False), loss_value, upstream, forcer, _settings(net, dtype))
        if compiled.is_compiled(model) and forcing is None:
            try:
                trace.regions = compiled.check(model, _step(spec, feed, dtype))
            except Exception as exc:
                raise raised_in(spec.source, exc, "while its compiled code ran beside its eager module tree") from None
        return trace

    def zoom(self, model: Any, spec: Spec, feed: Feed, layer: str, inputs: list[np.ndarray] | None) -> Any:
        from layerdiff.adapters.torch.zoom import zoom

        return zoom(model, spec, feed, layer, inputs)

def _eager(model: Any) -> torch.nn.Module:
    """The module whose calls are captured: a compiled model's eager module tree (``adapters.torch.compiled``)."""
    return compiled.eager(model) if compiled.is_compiled(model) else model


def _step(spec: Spec, feed: Feed, dtype: torch.dtype) -> Any:
    """One forward and backward of a module on the feed, as a run makes it, uncaptured: its outputs and the gradients
    of its parameters."""

    def step(module: torch.nn.Module) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        module.zero_grad(set_to_none=True)
        out = module(*[_tensor(x, dtype, grad=True) for x in feed.inputs])
        outputs = list(out) if isinstance(out, (tuple, list)) else [out]
        if spec.loss is None:
            torch.autograd.backward(outputs, [_from(feed.upstream(i, tuple(o.shape))).to(o.dtype) for i, o in enumerate(outputs)])
        else:
            targets = None if feed.targets is None else _tensor(feed.targets, dtype, grad=False)
            loss = spec.loss(outputs[0], targets)
            (loss.mean() if loss.ndim else loss).backward()
        return outputs, {n: p.grad for n, p in module.named_parameters() if p.grad is not None}

    return step


def _device(net: torch.nn.Module) -> torch.device:
    return next((p.device for p in net.parameters()), torch.device("cpu"))


def _settings(net: torch.nn.Module, dtype: torch.dtype) -> dict[str, str]:
    """What the run computed in, recorded in the dump: the model's dtype where NumPy holds its values in another
    (bfloat16, recorded in float32), and what a float32 matrix product computes in (TF32 on a GPU that allows it)."""
    device = _device(net)
    precision = torch.get_float32_matmul_precision()
    tf32 = device.type == "cuda" and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
    word = {"medium": "bfloat16", "high": "tf32"}.get(precision, "tf32" if tf32 else "float32")
    settings = {"device": str(device), "float32_matmul_precision": precision, "float32_matmul": word}
    if dtype == torch.bfloat16:
        settings["framework_dtype"] = "bfloat16"
    return settings


def _iterate(
    spec: Spec, net: torch.nn.Module, inputs: list[torch.Tensor], feed: Feed, dtype: torch.dtype, recorder: Recorder
) -> tuple[float, list[np.ndarray]]:
    try:
        out = forms.call(net, inputs, feed.names)
    except Exception as exc:
        raise raised_in(spec.source, exc, "in its forward pass") from None
    outputs = forms.compared(out, spec.output, spec.source, own_loss=spec.loss == "model")
    try:
        if spec.loss is None:
            value, upstream = seeded_upstream(feed, [_array(o) for o in outputs])
            torch.autograd.backward(outputs, [_from(u).to(o) for u, o in zip(upstream, outputs)])
            return value, upstream
        logits = outputs[0]
        grads: list[np.ndarray] = []
        if logits.requires_grad:
            # As retain_grad would see it (after the hooks before it), without retain_grad's own copy.
            logits.register_hook(lambda g: grads.append(recorder.gradient(g, "loss", "grad_input")))
        recorded = recorder.copy(logits)  # most often the last module's output, recorded already
        if spec.loss == "model":
            loss, kind = forms.own_loss(out, spec.source), f"{type(net).__name__}.loss"
        else:
            targets = None if feed.targets is None else _tensor(feed.targets, dtype, grad=False).to(logits.device)
            loss, kind = spec.loss(logits, targets), type(spec.loss).__name__
        if loss.ndim:
            loss = loss.mean()  # per-sample losses (reduction="none"), averaged as for the other frameworks
        loss.backward()
    except ModelFileError:
        raise
    except Exception as exc:
        raise raised_in(spec.source, exc, "in its loss or backward pass") from None
    grad = grads[0] if grads else None
    recorder.records.append(loss_record(kind, recorded, _array(loss), grad))
    return float(loss.detach()), []


def _param_records(net: torch.nn.Module, spec: Spec, copies: bool) -> list[ParamRecord]:
    """Parameters with their gradients; values copied when ``copies`` (what ``parameters()`` hands out may be
    kept while the model moves on), shared after a run (the runner snapshots or replaces them)."""
    # A tied parameter belongs to the first module that holds it (the embedding, not the output head).
    owners: dict[int, tuple[str, torch.nn.Module, str]] = {}
    for path, m in net.named_modules():
        for n, p in m.named_parameters(recurse=False):
            owners.setdefault(id(p), (path, m, n))
    records = []
    for full, p in net.named_parameters():
        path, module, pname = owners[id(p)]
        grad = None if p.grad is None else _shared(p.grad)
        layout = spec.layouts.get(full) or layout_of(module, pname, p.ndim)
        value = _array(p) if copies else _shared(p)
        records.append(ParamRecord(full, path or "model", layout, value, grad, gates=gates_of(module, pname)))
    return records


def _tensor(x: np.ndarray, dtype: torch.dtype, grad: bool) -> torch.Tensor:
    t = _from(x)
    if t.is_floating_point():
        t = t.to(dtype)
        if grad:
            t.requires_grad_(True)
    return t
