"""Drive a hand-written NumPy network layer by layer, however its author laid out parameters and gradients.

Forms taken without changes to the user's layers:
- a network object with ``layers`` (list or dict) of objects with ``forward``/``backward``; a bare list of them;
  or one object with ``forward``/``backward`` whose inside is marked with ``tap``/``tap_grad``;
- ``forward(x)`` returning its output or storing ``self.output``, with an optional training flag;
- ``backward(dout)`` returning the input gradient or storing it as ``dinputs``/``dX``/``dx``;
- parameters in a dict (``params``/``parameters``) or as attributes (``W``, ``weights``, ``gamma``…), gradients in a
  dict (``grads``/``gradients``) or as attributes (``dW``, ``dweights``, ``grad_W``…).
A model file can say where things are for anything else (``params_of``, ``grads_of``, ``input_grad_of``).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerdiff.adapter import Feed, Forcing, Prepared, Spec
from layerdiff.capture import Forcer, Raised, finish, loss_record, seeded_upstream
from layerdiff.errors import ModelFileError, raised_in, raised_line
from layerdiff.records import Failure, LayerRecord, ParamRecord, Trace, snapshot, tensor_key, unique_name
from layerdiff.tap import tapping

PARAM_DICTS = ("params", "parameters")
GRAD_DICTS = ("grads", "gradients")
PARAM_ATTRS = ("W", "b", "weights", "biases", "weight", "bias", "kernel", "gamma", "beta", "scale")
GRAD_PATTERNS = ("d{}", "d_{}", "grad_{}", "{}_grad", "grad{}")
INPUT_GRAD_ATTRS = ("dinputs", "dinput", "dX", "dx", "grad_input", "dout_prev")
TRAINING_FLAGS = ("training", "train", "is_training", "train_mode")


def _is_layer(obj: Any) -> bool:
    return callable(getattr(obj, "forward", None)) and callable(getattr(obj, "backward", None))


@dataclass
class Slot:
    """Where a parameter lives, so that it can be read and replaced."""

    holder: Any  # a dict or the layer object
    key: str

    def get(self) -> Any:
        return self.holder[self.key] if isinstance(self.holder, dict) else getattr(self.holder, self.key)

    def set(self, value: np.ndarray) -> None:
        if isinstance(self.holder, dict):
            self.holder[self.key] = value
        else:
            setattr(self.holder, self.key, value)


@dataclass
class Layer:
    name: str
    obj: Any


class Network:
    """The layers of one NumPy model, named, with their parameter slots found."""

    def __init__(self, obj: Any, spec: Spec) -> None:
        self.spec = spec
        if isinstance(obj, (list, tuple)):
            self.layers = [Layer(str(i), layer) for i, layer in enumerate(obj)]
            self.whole = None
        elif isinstance(getattr(obj, "layers", None), (list, tuple, dict)) and _all_layers(obj.layers):
            self.layers = _named_layers(obj)
            self.whole = None
        else:
            self.layers = [Layer("model", obj)]
            self.whole = obj

    def slots(self, layer: Layer) -> dict[str, Slot]:
        glue = self.spec.glue.get("params_of")
        if glue is not None:
            found = glue(layer.obj)
            if found is not None:
                return {k: Slot(found, k) for k in found}
        for attr in PARAM_DICTS:
            d = getattr(layer.obj, attr, None)
            if isinstance(d, dict) and d and all(isinstance(v, np.ndarray) for v in d.values()):
                return {k: Slot(d, k) for k in d}
        return {a: Slot(layer.obj, a) for a in PARAM_ATTRS if isinstance(getattr(layer.obj, a, None), np.ndarray)}

    def grad(self, layer: Layer, pname: str) -> np.ndarray | None:
        glue = self.spec.glue.get("grads_of")
        if glue is not None:
            found = glue(layer.obj)
            if found is not None:
                return found.get(pname)
        for attr in GRAD_DICTS:
            d = getattr(layer.obj, attr, None)
            if isinstance(d, dict) and pname in d:
                return np.asarray(d[pname])
        for pattern in GRAD_PATTERNS:
            g = getattr(layer.obj, pattern.format(pname), None)
            if isinstance(g, np.ndarray):
                return g
        return None

    def params(self) -> list[tuple[str, Layer, str, Slot]]:
        """(full name, owner, key, slot). A whole network's own parameters keep their keys as names; one that holds
        its layers as attributes (``self.fc1 = Dense(...)``) has theirs, named ``fc1.W``."""
        if self.whole is None:
            return [(f"{layer.name}.{k}", layer, k, slot) for layer in self.layers for k, slot in self.slots(layer).items()]
        own = self.slots(self.layers[0])
        if own:
            return [(k, self.layers[0], k, slot) for k, slot in own.items()]
        parts = [Layer(k, v) for k, v in vars(self.whole).items() if not k.startswith("_") and hasattr(v, "__dict__")]
        return [(f"{part.name}.{k}", part, k, slot) for part in parts for k, slot in self.slots(part).items()]


def _all_layers(layers: Any) -> bool:
    items = list(layers.values()) if isinstance(layers, dict) else list(layers)
    return bool(items) and all(_is_layer(layer) for layer in items)


def _named_layers(obj: Any) -> list[Layer]:
    if isinstance(obj.layers, dict):
        return [Layer(str(k), v) for k, v in obj.layers.items()]
    attr_names = {id(v): k for k, v in vars(obj).items() if _is_layer(v) and not k.startswith("_")}
    return [Layer(attr_names.get(id(layer), f"layers.{i}"), layer) for i, layer in enumerate(obj.layers)]


def _layout(name: str, value: np.ndarray, spec: Spec) -> str:
    if name in spec.layouts:
        return spec.layouts[name]
    if value.ndim == 2 and value.shape[0] == 1:
        return ""  # nnfs's (1, out) bias: matched to (out,) by shape
    # The x @ W convention of from-scratch code (cs231n, nnfs, d2l); NCHW convolutions as cs231n writes them.
    # Guesses ("?"): where only the shapes as they are fit the other side, the shapes win.
    return {1: "out", 2: "in out?", 4: "O I H W?"}.get(value.ndim, "")


class _Copies:
    """Snapshots of what one step hands to the next: a layer's input is the array the layer before it returned,
    untouched in between, so it is copied once for both records."""

    def __init__(self) -> None:
        self.last: dict[int, tuple[Any, np.ndarray]] = {}  # the value itself is held, so that its id stays its own
        self.now: dict[int, tuple[Any, np.ndarray]] = {}

    def received(self, value: Any) -> np.ndarray:
        """A value a step receives: the copy of what the step before handed on, when it is that very array."""
        hit = self.last.get(id(value))
        return hit[1] if hit is not None and hit[0] is value else snapshot(value)

    def handed_on(self, value: Any) -> np.ndarray:
        """A value a step hands on, copied always: it may be the input, changed in place and returned."""
        copy = snapshot(value)
        self.now[id(value)] = (value, copy)
        return copy

    def step(self) -> None:
        self.last, self.now = self.now, {}


class NumpyTapper:
    """Collects ``tap``/``tap_grad`` calls made inside the user's code; in a replay, hands back forced values."""

    def __init__(self, trace_layers: list[LayerRecord], forcer: Forcer) -> None:
        self.layers = trace_layers
        self.by_name: dict[str, LayerRecord] = {}
        self.forcer = forcer

    def tap(self, name: str, value: Any) -> Any:
        record = LayerRecord(unique_name(name, self.by_name), "tap", {"output": snapshot(value)})
        self.by_name[record.name] = record
        self.layers.append(record)
        return _forced(self.forcer, "output", record.name, [value])[0]

    def tap_grad(self, name: str, grad: Any) -> Any:
        # A name tapped n times gets its gradients in reverse order, as backward visits them.
        candidates = [r for r in self.layers if r.kind == "tap" and r.name.split("#")[0] == name]
        pending = [r for r in candidates if "grad_output" not in r.tensors]
        if not candidates:
            return grad
        record = pending[-1] if pending else candidates[-1]
        record.tensors["grad_output"] = snapshot(grad)
        return _forced(self.forcer, "grad_output", record.name, [grad])[0]


def _forced(forcer: Forcer, kind: str, name: str, values: list[Any]) -> list[Any]:
    """The forced values for a layer, in its own dtype, or its own values when it is not forced (or not alike)."""
    forced = forcer.values(kind, name, [np.shape(v) for v in values])
    if forced is None:
        return values
    return [np.array(f, dtype=np.asarray(v).dtype) for f, v in zip(forced, values)]


class NumpyAdapter:
    name = "numpy"
    fallback = True  # claims any object with forward and backward: the frameworks' adapters are asked first

    def claims(self, obj: Any) -> bool:
        if isinstance(obj, (list, tuple)):
            return _all_layers(obj)
        layers = getattr(obj, "layers", None)
        return _is_layer(obj) or (isinstance(layers, (list, tuple, dict)) and _all_layers(layers))

    def version(self) -> str:
        return np.__version__

    def prepare(self, obj: Any, spec: Spec, dtype: str) -> Prepared:
        if dtype == "float64":
            for _, layer, _, slot in Network(obj, spec).params():
                value = slot.get()
                if value.dtype != np.float64:
                    _replace(layer.obj, slot, value, value.astype(np.float64))
        return Prepared(obj)

    def parameters(self, model: Any, spec: Spec) -> list[ParamRecord]:
        return [
            ParamRecord(full, layer.name, _layout(full, slot.get(), spec), snapshot(slot.get()))
            for full, layer, _, slot in Network(model, spec).params()
        ]

    def load_parameters(self, model: Any, spec: Spec, values: dict[str, np.ndarray]) -> None:
        for full, layer, _, slot in Network(model, spec).params():
            if full in values:
                current = slot.get()
                if current.shape == values[full].shape:
                    current[...] = values[full]  # in place: the layer may hold the array under two names
                else:
                    _replace(layer.obj, slot, current, values[full].astype(current.dtype))

    def run(self, model: Any, spec: Spec, feed: Feed, forcing: Forcing | None = None) -> Trace:
        net = Network(model, spec)
        records: list[LayerRecord] = []
        forcer = Forcer(forcing)
        dtype = _dtype_of(net)
        inputs = [x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x for x in feed.inputs]
        with tapping(NumpyTapper(records, forcer)), warnings.catch_warnings():
            # Overflow or log(0) in the user's network is a finding, reported from the recorded NaN/Inf,
            # not a reason to stop, even where warnings are errors (pytest -W error).
            warnings.simplefilter("default", RuntimeWarning)
            copies = _Copies()
            outputs, layer_records = _forward(net, inputs, records, forcer, copies)
            loss, douts = _loss(spec, outputs, feed, records, copies)
            failed = _backward(net, layer_records, douts, forcer, copies)
        for r in list(records):
            if r.name == "model" and net.whole is not None and len(records) > 1:
                records.remove(r)  # taps inside the network say more than its outer input and output
        # Values as they are (forward and backward do not change them); gradients copied, since hand-written layers
        # accumulate into and zero their gradient arrays in place on the next run.
        unfinished = failed[0].unfinished if failed is not None else ()  # their gradients are not this run's
        params = [
            ParamRecord(full, layer.name, _layout(full, slot.get(), spec), np.asarray(slot.get()), None if layer.name in unfinished else _snap(net.grad(layer, k)))
            for full, layer, k, slot in net.params()
        ]
        trace = finish(records, params, loss, [] if spec.loss is not None else douts, forcer)
        if failed is not None:
            trace.failure = failed[0]
            raise Raised(failed[1], trace)
        return trace


def _forward(
    net: Network, inputs: list[np.ndarray], records: list[LayerRecord], forcer: Forcer, copies: _Copies
) -> tuple[list[np.ndarray], list[LayerRecord]]:
    layer_records = []
    values: Any = inputs if net.whole is not None else inputs[:1]
    for layer in net.layers:
        record = LayerRecord(layer.name, type(layer.obj).__name__)
        for i, v in enumerate(values):
            record.tensors[tensor_key("input", i)] = copies.received(v)
        try:
            out = _call_forward(layer.obj, values)
        except ModelFileError:
            raise
        except Exception as exc:
            raise raised_in(net.spec.source, exc, f"in the forward pass of layer '{layer.name}'") from None
        if out is None:
            out = getattr(layer.obj, "output", None)
            if out is None:
                raise ModelFileError(
                    f"Layer '{layer.name}' ({type(layer.obj).__name__}) of {net.spec.source}: forward returned "
                    "nothing and set no `output` attribute. Return the output from forward."
                )
        values = list(out) if isinstance(out, tuple) else [out]
        for i, v in enumerate(values):
            record.tensors[tensor_key("output", i)] = copies.handed_on(v)
        copies.step()
        records.append(record)
        layer_records.append(record)
        values = _forced(forcer, "output", layer.name, values)
    return [np.asarray(v) for v in values], layer_records


def _loss(
    spec: Spec, outputs: list[np.ndarray], feed: Feed, records: list[LayerRecord], copies: _Copies
) -> tuple[float, list[np.ndarray]]:
    if spec.loss is None:
        return seeded_upstream(feed, outputs)
    logits = outputs[0]
    recorded = copies.received(logits)  # before the loss runs: losses often shift their input in place
    try:
        value, dlogits = _call_loss(spec.loss, logits, feed.targets)
    except ModelFileError:
        raise
    except Exception as exc:
        raise raised_in(spec.source, exc, "in its loss") from None
    records.append(loss_record(type(spec.loss).__name__, recorded, np.asarray(value, dtype=logits.dtype), copies.handed_on(dlogits)))
    copies.step()
    return value, [np.asarray(dlogits)]


def _backward(
    net: Network, layer_records: list[LayerRecord], douts: list[np.ndarray], forcer: Forcer, copies: _Copies
) -> tuple[Failure, ModelFileError] | None:
    """Every layer's backward, from the last; when one raises, the failure, and the error a command stops with."""
    grads: list[np.ndarray] = douts
    glue = net.spec.glue.get("input_grad_of")
    for layer, record in zip(reversed(net.layers), reversed(layer_records)):
        for i, g in enumerate(grads):
            record.tensors[tensor_key("grad_output", i)] = copies.received(g)
        grads = _forced(forcer, "grad_output", layer.name, grads)
        try:
            returned = layer.obj.backward(*grads)
        except Exception as exc:
            unfinished = tuple(l.name for l in net.layers[: net.layers.index(layer) + 1])
            return Failure(layer.name, raised_line(exc), unfinished), raised_in(net.spec.source, exc, f"in the backward pass of layer '{layer.name}'")
        dx = glue(layer.obj, returned) if glue is not None else _input_grad(layer.obj, returned)
        if dx is None:
            if layer is net.layers[0]:
                break  # some first layers skip the input gradient nobody needs
            raise ModelFileError(
                f"Layer '{layer.name}' ({type(layer.obj).__name__}) of {net.spec.source}: backward returned no "
                f"input gradient and set none of {', '.join(INPUT_GRAD_ATTRS)}. Return it, or define "
                "input_grad_of(layer, returned) in the model file."
            )
        grads = list(dx) if isinstance(dx, list) else [dx]
        for i, g in enumerate(grads):
            record.tensors[tensor_key("grad_input", i)] = copies.handed_on(g)
        copies.step()
    return None


def _call_forward(layer: Any, values: list[Any]) -> Any:
    kwargs = {}
    params = inspect.signature(layer.forward).parameters
    for flag in TRAINING_FLAGS:
        if flag in params:
            kwargs[flag] = True
    return layer.forward(*values, **kwargs)


def _call_loss(loss: Any, logits: np.ndarray, targets: Any) -> tuple[float, np.ndarray]:
    if not hasattr(loss, "forward"):
        value, dlogits = loss(logits, targets)  # cs231n: softmax_loss(x, y) -> (loss, dx)
        return float(value), np.asarray(dlogits)
    value = np.asarray(loss.forward(logits, targets))
    if value.ndim:
        value = value.mean()  # per-sample losses, which nnfs averages in Loss.calculate
    n_args = len([p for p in inspect.signature(loss.backward).parameters.values() if p.default is p.empty])
    if n_args == 0:
        returned = loss.backward()
    else:
        # nnfs: backward(dvalues, y_true), dvalues being the fused softmax's output when it keeps one.
        returned = loss.backward(getattr(loss, "output", logits), targets)
    dlogits = _input_grad(loss, returned)
    return float(value), np.asarray(dlogits)


def _input_grad(obj: Any, returned: Any) -> Any:
    if isinstance(returned, tuple):
        returned = returned[0]  # (dx, dw, db) as functional code returns it
    if returned is not None:
        return returned
    for attr in INPUT_GRAD_ATTRS:
        value = getattr(obj, attr, None)
        if value is not None:
            return value
    return None


def _replace(layer: Any, slot: Slot, old: np.ndarray, new: np.ndarray) -> None:
    """Swap an array everywhere the layer refers to it, so that aliases stay aliases."""
    slot.set(new)
    for holder in [layer.__dict__, *[v for v in vars(layer).values() if isinstance(v, dict)]]:
        for k, v in list(holder.items()):
            if v is old:
                holder[k] = new


def _dtype_of(net: Network) -> Any:
    for _, _, _, slot in net.params():
        value = slot.get()
        if np.issubdtype(value.dtype, np.floating):
            return value.dtype
    return np.float64


def _snap(value: Any) -> np.ndarray | None:
    return None if value is None else snapshot(value)
