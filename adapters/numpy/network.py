"""The layers of a hand-written NumPy network and where each keeps its parameters and their gradients.

Parameters are found, in this order, through the file's ``params_of``; in a dict ``params``/``parameters`` (less
the entries that are state, not parameters: running statistics, and entries missing from a gradient dict that
has the others); as array attributes named as weights are (``W``, ``b``, ``weights``, ``Wi``, ``W_hh``, ``b1``…);
and, for an object that has none of its own, in the objects it holds (mytorch's strided ``Conv2d`` keeps its
weights in ``conv2d_stride1``; a classifier holds two cells and a head), named by the path to them.
Gradients: the file's ``grads_of``; a dict ``grads``/``gradients`` under the same keys; or an attribute named after
the parameter (``dW``, ``dLdW``, ``dL_dw``, ``grad_W``, ``W_grad``). ``capture`` pairs the rest by shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from layerdiff.adapter import Spec
from layerdiff.adapters.numpy.layouts import known_layout
from layerdiff.errors import raised_in

PARAM_DICTS = ("params", "parameters")
GRAD_DICTS = ("grads", "gradients")
PARAM_ATTRS = ("W", "b", "weights", "biases", "weight", "bias", "kernel", "gamma", "beta", "scale")
# Short weight-like names: W, U, V, w or b, then up to three letters or digits (Wi, W_hh, Wax, b1, bf).
WEIGHT_NAME = re.compile(r"^(?:[WUVwb])(?:_?[A-Za-z0-9]{1,3})?$")
# Longer names holding a weight's word (Keras's recurrent_kernel), less those of gradients (dweights, grad_bias).
WEIGHT_WORDS = ("weight", "kernel", "bias")
GRADIENT_NAME = re.compile(r"^(?:d[A-Z_]|d(?:weight|kernel|bias)|grad|delta)|_grad$")
STATE_PREFIXES = ("running_", "moving_")  # batch-norm statistics kept beside the parameters
GRAD_PATTERNS = ("d{}", "d_{}", "grad_{}", "{}_grad", "grad{}", "dLd{}", "dL_d{}")
DEPTH = 3  # how deep into held objects parameters are looked for


def is_layer(obj: Any) -> bool:
    return callable(getattr(obj, "forward", None)) and callable(getattr(obj, "backward", None))


@dataclass
class Slot:
    """Where a parameter lives, so that it can be read and replaced; ``owner`` is the object it belongs to."""

    holder: Any  # a dict or the owning object
    key: str
    owner: Any

    def get(self) -> Any:
        return self.holder[self.key] if isinstance(self.holder, dict) else getattr(self.holder, self.key)

    def set(self, value: np.ndarray) -> None:
        old = self.get()
        if isinstance(self.holder, dict):
            self.holder[self.key] = value
        else:
            setattr(self.holder, self.key, value)
        replace_aliases(self.owner, value, old)


@dataclass
class Layer:
    name: str
    obj: Any


@dataclass
class Param:
    name: str  # as recorded: "fc1.W", "3.conv2d_stride1.W"
    layer: Layer
    key: str  # within the layer: "W", "conv2d_stride1.W"
    slot: Slot
    owner: str  # the layer it is recorded with: the layer's name, or in a whole network the path of its part


class Network:
    """The layers of one NumPy model, named, with their parameter slots found."""

    def __init__(self, obj: Any, spec: Spec) -> None:
        self.spec = spec
        self.whole: Any = None
        self._params: list[Param] | None = None
        if isinstance(obj, (list, tuple)):
            self.layers = [Layer(str(i), layer) for i, layer in enumerate(obj)]
        elif isinstance(obj, dict):
            self.layers = [Layer(str(k), layer) for k, layer in obj.items()]
        elif isinstance(getattr(obj, "layers", None), (list, tuple, dict)) and all_layers(obj.layers):
            self.layers = _named_layers(obj)
        else:
            self.layers = [Layer("model", obj)]
            self.whole = obj

    def slots(self, obj: Any) -> dict[str, Slot]:
        """The parameters of one object, by key; the file's ``params_of`` first."""
        glue = self.spec.glue.get("params_of")
        if glue is not None:
            found = _glue(glue, obj, self.spec.source, "params_of")
            if found is not None:
                return {k: Slot(found, k, obj) for k in found}
        return own_slots(obj)

    def params(self) -> list[Param]:
        """Every parameter. A whole network's own parameters keep their keys as names; one that holds its layers as
        attributes (``self.fc1 = Dense(...)``) has theirs, named ``fc1.W``. Found once per ``Network``: make a new
        one after the model changes (a first forward that built its weights)."""
        if self._params is None:
            self._params = self._found()
        return self._params

    def _found(self) -> list[Param]:
        found, seen = [], set()
        for layer in self.layers:
            prefix = "" if self.whole is not None else f"{layer.name}."
            for key, slot, part in self._held(layer.obj, DEPTH):
                if id(slot.get()) in seen:  # one array held twice (a list of the layers beside them)
                    continue
                seen.add(id(slot.get()))
                owner = part if self.whole is not None and part else layer.name
                found.append(Param(prefix + key, layer, key, slot, owner))
        return found

    def held(self, obj: Any) -> dict[str, Slot]:
        """The parameters of one layer object, by their keys within it (``conv2d_stride1.W``)."""
        return {key: slot for key, slot, _ in self._held(obj, DEPTH)}

    def _held(self, obj: Any, depth: int) -> Iterator[tuple[str, Slot, str]]:
        """(key, slot, the path of the part holding it: "" for the object's own)."""
        own = self.slots(obj)
        if own or depth == 0:
            for key, slot in own.items():
                yield key, slot, ""
            return
        for attr, part in _parts(obj):
            for key, slot, path in self._held(part, depth - 1):
                yield f"{attr}.{key}", slot, f"{attr}.{path}" if path else attr

    def grad(self, p: Param) -> np.ndarray | None:
        """The gradient of ``p`` where a name says it is; None when none does."""
        glue = self.spec.glue.get("grads_of")
        if glue is not None:
            found = _glue(glue, p.layer.obj, self.spec.source, "grads_of")
            if found is not None:
                value = found.get(p.key)
                return None if value is None else np.asarray(value)
        return named_grad(p.slot.owner, p.slot.key)

    def layout(self, p: Param) -> str:
        declared = self.spec.layouts.get(p.name)
        if declared:
            return declared
        value = np.asarray(p.slot.get())
        known = known_layout(p.slot.owner, p.slot.key)
        if known and len(known.split()) == value.ndim:
            return known
        if value.ndim == 2 and value.shape[0] == 1:
            return ""  # nnfs's (1, out) bias: matched to (out,) by shape
        # The x @ W convention of from-scratch code (cs231n, nnfs, d2l); NCHW convolutions as cs231n writes them.
        # Guesses ("?"): where only the shapes as they are fit the other side, the shapes win.
        return {1: "out", 2: "in out?", 4: "O I H W?"}.get(value.ndim, "")


def own_slots(obj: Any) -> dict[str, Slot]:
    for attr in PARAM_DICTS:
        d = getattr(obj, attr, None)
        if isinstance(d, dict) and d and all(isinstance(v, np.ndarray) for v in d.values()):
            return {k: Slot(d, k, obj) for k in d if not _state(obj, k)}
    if isinstance(obj, (list, tuple, dict, np.ndarray)) or not hasattr(obj, "__dict__"):
        return {}
    return {
        a: Slot(obj, a, obj)
        for a, v in vars(obj).items()
        if isinstance(v, np.ndarray) and v.dtype.kind == "f" and _weight_like(a)
    }


def _weight_like(name: str) -> bool:
    if name in PARAM_ATTRS or WEIGHT_NAME.match(name):
        return True
    return any(w in name.lower() for w in WEIGHT_WORDS) and not GRADIENT_NAME.search(name)


def _state(obj: Any, key: str) -> bool:
    """Whether a parameter-dict entry is state rather than a parameter: no gradient beside the others'."""
    if key.startswith(STATE_PREFIXES):
        return True
    grads = next((g for a in GRAD_DICTS if isinstance(g := getattr(obj, a, None), dict) and g), None)
    return grads is not None and key not in grads


def _parts(obj: Any) -> Iterator[tuple[str, Any]]:
    """The objects ``obj`` holds, by attribute (a list's items as ``cells.0``), that may hold parameters."""
    if isinstance(obj, (list, tuple, np.ndarray)) or not hasattr(obj, "__dict__"):
        return
    for attr, value in vars(obj).items():
        if attr.startswith("_"):
            continue
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else list(value.items()) if isinstance(value, dict) else [(None, value)]
        for index, item in items:
            if hasattr(item, "__dict__") and not isinstance(item, (type, np.ndarray)) and not callable(item):
                yield (attr if index is None else f"{attr}.{index}"), item
            elif is_layer(item):
                yield (attr if index is None else f"{attr}.{index}"), item


def named_grad(owner: Any, leaf: str) -> np.ndarray | None:
    for attr in GRAD_DICTS:
        d = getattr(owner, attr, None)
        if isinstance(d, dict) and leaf in d:
            return np.asarray(d[leaf])
    for pattern in GRAD_PATTERNS:
        for name in dict.fromkeys((leaf, leaf.lower())):
            g = getattr(owner, pattern.format(name), None)
            if isinstance(g, np.ndarray):
                return g
    return None


def all_layers(layers: Any) -> bool:
    items = list(layers.values()) if isinstance(layers, dict) else list(layers)
    return bool(items) and all(is_layer(layer) for layer in items)


def _named_layers(obj: Any) -> list[Layer]:
    if isinstance(obj.layers, dict):
        return [Layer(str(k), v) for k, v in obj.layers.items()]
    attr_names = {id(v): k for k, v in vars(obj).items() if is_layer(v) and not k.startswith("_")}
    return [Layer(attr_names.get(id(layer), f"layers.{i}"), layer) for i, layer in enumerate(obj.layers)]


def _glue(glue: Callable[..., Any], obj: Any, source: str, name: str) -> Any:
    """The file's own glue, called; what it raises is the file's error, with its traceback."""
    try:
        return glue(obj)
    except Exception as exc:
        raise raised_in(source, exc, f"in its {name}({type(obj).__name__})") from None


def replace_aliases(owner: Any, new: np.ndarray, old: np.ndarray | None = None) -> None:
    """After a parameter array is swapped, swap it wherever the owner refers to the old one, so that aliases stay."""
    if old is None or not hasattr(owner, "__dict__"):
        return
    for holder in [owner.__dict__, *[v for v in vars(owner).values() if isinstance(v, dict)]]:
        for k, v in list(holder.items()):
            if v is old:
                holder[k] = new
