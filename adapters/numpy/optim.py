"""Training a hand-written NumPy network with what its file declares: an optimizer object with ``step()``, which
reads the gradients where layerdiff found them (written there first: the layers' ``grads``, ``dW``…), or the
file's ``update(model, lr)``; and the layers' buffers (running statistics, a carried hidden state), by name.

An optimizer's state is found by name and shape on the optimizer (and on objects it holds): a dict keyed by
parameter (its name, ``(layer, key)``, or ``id`` of its array), of arrays or of per-parameter dicts of entries
(cs231n's configs); a list parallel to the model's parameters; a step count (``t``). Entries are named as PyTorch
names them (``optimizer.entry_name``). An array of a parameter's shape that none of these place is refused: its
state could not be mapped onto the other side's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from layerdiff.adapter import Spec
from layerdiff.errors import ModelFileError, raised_in
from layerdiff.optimizer import Buffer, State, Training, buffer_name, entry_name, setting_name

from layerdiff.adapters.numpy.network import GRAD_DICTS, GRAD_PATTERNS, PARAM_DICTS, Layer, Network, Param

DEPTH = 2  # objects held by the optimizer that are searched for its state, below the optimizer itself
SKIP = ("params", "parameters", "grads", "gradients", "model", "net", "network", "layers")


@dataclass
class Slot:
    """Where a value lives, so that it can be read and overwritten: a dict's key, a list's index, an attribute."""

    holder: Any
    key: Any

    def get(self) -> Any:
        if isinstance(self.holder, (dict, list, np.ndarray)):
            return self.holder[self.key]
        return getattr(self.holder, self.key)

    def set(self, value: Any) -> None:
        current = self.get()
        if isinstance(current, np.ndarray) and value is not None and current.shape == np.shape(value) and current.dtype != object:
            current[...] = value  # in place: the holder may keep it under two names
            return
        if value is not None and not isinstance(current, np.ndarray) and isinstance(current, (int, float, np.number)):
            value = type(current)(np.asarray(value).item())
        elif value is not None:
            value = np.array(value, copy=True)
        if isinstance(self.holder, (dict, list, np.ndarray)):
            self.holder[self.key] = value
        else:
            setattr(self.holder, self.key, value)


@dataclass
class Entry:
    param: str | None  # None: one value for every parameter (a step count)
    name: str  # PyTorch's
    slot: Slot


def _holders(net: Network) -> list[Layer]:
    if net.whole is None:
        return net.layers
    parts = [Layer(k, v) for k, v in vars(net.whole).items() if not k.startswith("_") and hasattr(v, "__dict__")]
    return [Layer("model", net.whole), *parts]


def _buffer_slots(net: Network) -> Iterator[tuple[str, str, Slot]]:
    """(name, layer, slot) of each buffer: an attribute of a layer, or a key of its parameter dict, named as one."""
    params = {id(p.slot.get()) for p in net.params()}
    for layer in _holders(net):
        places: list[Any] = [layer.obj, *(d for a in PARAM_DICTS if isinstance(d := getattr(layer.obj, a, None), dict))]
        for holder in places:
            items = holder.items() if isinstance(holder, dict) else vars(holder).items()
            for key, value in list(items):
                numeric = isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.number)
                if buffer_name(str(key)) is not None and (numeric or value is None) and id(value) not in params:
                    yield f"{layer.name}.{key}", layer.name, Slot(holder, key)


class NumpyStepper:
    """The file's optimizer object (``step()``) or its ``update(model, lr)``, over one network."""

    def __init__(self, model: Any, spec: Spec, training: Training) -> None:
        self.model, self.spec, self.training = model, spec, training
        self.optimizer = training.optimizer
        if self.optimizer is not None and not callable(getattr(self.optimizer, "step", None)):
            raise ModelFileError(
                f"`optimizer` in {spec.source} is a {type(self.optimizer).__name__} without a step() method. Give an "
                "object whose step() updates the model from the gradients its layers hold, or define update(model, lr)."
            )
        self.name = type(self.optimizer).__name__ if self.optimizer is not None else "the file's update()"
        self.checked = False

    def _params(self) -> list[tuple[str, np.ndarray]]:
        return [(p.name, p.slot.get()) for p in Network(self.model, self.spec).params()]

    def settings(self) -> dict[str, Any]:
        if self.optimizer is None:
            return {"lr": self.training.lr}
        found: dict[str, Any] = {}
        for obj in _objects(self.optimizer, DEPTH):
            for key, value in vars(obj).items():
                name = setting_name(key)
                if name in ("lr", "momentum", "weight_decay", "eps", "beta1", "beta2", "betas") and name not in found:
                    if isinstance(value, (int, float, tuple)) and not isinstance(value, bool):
                        found[name] = value
        if "beta1" in found and "beta2" in found:
            found["betas"] = (found.pop("beta1"), found.pop("beta2"))
        return found

    def step(self, grads: dict[str, np.ndarray]) -> None:
        net = Network(self.model, self.spec)
        for p in net.params():
            if p.name in grads:
                _give_grad(net, p, grads[p.name])
        before = None if self.checked else [np.array(v, copy=True) for _, v in self._params()]
        try:
            if self.optimizer is not None:
                self.optimizer.step()
            else:
                self.spec.glue["update"](self.model, self.training.lr)
            if self.training.scheduler is not None:
                self.training.scheduler.step()
        except Exception as exc:
            raise raised_in(self.spec.source, exc, "in its optimizer's step") from None
        if before is not None:
            self._check_moved(before, grads)

    def _check_moved(self, before: list[np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Refuse an optimizer that moved none of the model's parameters although some gradient is not zero."""
        self.checked = True
        after = self._params()
        if any(np.any(g != 0) for g in grads.values()) and all(np.array_equal(b, v) for b, (_, v) in zip(before, after)):
            raise ModelFileError(
                f"The optimizer of {self.spec.source} changed none of the model's parameters: it is not over them "
                "(built over copies, or over arrays the layers have since replaced). Have its step() read the "
                "parameters and gradients from the layers (`model.layers`), as the model holds them."
            )

    def state(self) -> State:
        found: State = {}
        names = [n for n, _ in self._params()]
        for e in _entries(self.optimizer, self._params(), self.spec.source):
            value = e.slot.get()
            if value is None or not np.issubdtype(np.asarray(value).dtype, np.number):
                continue
            for param in [e.param] if e.param is not None else names:
                found.setdefault(param, {})[e.name] = np.array(value, dtype=np.asarray(value).dtype, copy=True)
        return found

    def load_state(self, state: State) -> None:
        for e in _entries(self.optimizer, self._params(), self.spec.source):
            given = [s[e.name] for p, s in state.items() if e.name in s and (e.param is None or p == e.param)]
            if given and e.slot.get() is not None:
                e.slot.set(given[0])


def _give_grad(net: Network, p: Param, value: np.ndarray) -> None:
    """Write a gradient where the network's optimizer reads it: where layerdiff found it."""
    layer, key = p.layer, p.key
    current = net.grad(p)
    if isinstance(current, np.ndarray) and current.shape == value.shape and current.flags.writeable:
        current[...] = value
        return
    for attr in GRAD_DICTS:
        d = getattr(layer.obj, attr, None)
        if isinstance(d, dict) and key in d:
            d[key] = np.array(value, copy=True)
            return
    for pattern in GRAD_PATTERNS:
        if isinstance(getattr(layer.obj, pattern.format(key), None), np.ndarray):
            setattr(layer.obj, pattern.format(key), np.array(value, copy=True))
            return


def _objects(root: Any, depth: int) -> Iterator[Any]:
    """``root`` and the plain objects it holds, ``depth`` levels down."""
    seen: set[int] = set()
    level = [root]
    for _ in range(depth + 1):
        following = []
        for obj in level:
            if id(obj) in seen or not hasattr(obj, "__dict__") or isinstance(obj, type):
                continue
            seen.add(id(obj))
            yield obj
            following += [v for k, v in vars(obj).items() if k not in SKIP and hasattr(v, "__dict__") and not callable(v)]
        level = following


def _entries(optimizer: Any, params: list[tuple[str, np.ndarray]], source: str) -> list[Entry]:
    """Where the optimizer keeps its state, by parameter and entry.

    Raises:
        ModelFileError: arrays of a parameter's shape that cannot be assigned to parameters.
    """
    if optimizer is None:
        return []
    objects = list(_objects(optimizer, DEPTH))
    finder = _Finder(params, objects)
    for obj in objects:
        for key, value in vars(obj).items():
            if key not in SKIP and not callable(value):
                finder.visit(obj, key, value)
    if finder.lost:
        names = ", ".join(n for n, _ in params[:4]) + (", …" if len(params) > 4 else "")
        raise ModelFileError(
            f"The state of the optimizer in {source} cannot be mapped onto its parameters: {finder.lost[0]} holds "
            f"arrays of their shapes but names none of them ({names}). Key it by parameter name, or keep one list "
            "in the order of the parameters the optimizer holds."
        )
    moments = any(entry_name(e.name) == "exp_avg" for e in finder.found)
    return [Entry(e.param, entry_name(e.name, moments), e.slot) for e in finder.found]


class _Finder:
    """Collects state entries (their names as written) from an optimizer's attributes."""

    def __init__(self, params: list[tuple[str, np.ndarray]], objects: list[Any]) -> None:
        self.names = [n for n, _ in params]
        self.by_id = {id(v): n for n, v in params}
        self.shapes = {n: np.shape(v) for n, v in params}
        # Lists parallel to the parameters are in the order of the optimizer's own list of them, if it keeps one.
        held = [v for obj in objects for v in vars(obj).values() if isinstance(v, (list, tuple)) and v and self._params(v)]
        self.order = [self.by_id[id(x)] for x in held[0]] if held else self.names
        self.found: list[Entry] = []
        self.lost: list[str] = []

    def _params(self, items: Any) -> bool:
        return all(id(x) in self.by_id for x in items)

    def param(self, key: Any, prefix: str = "") -> str | None:
        if isinstance(key, int) and not isinstance(key, bool) and key in self.by_id:
            return self.by_id[key]
        if isinstance(key, tuple):
            key = ".".join(map(str, key))
        name = f"{prefix}.{key}" if prefix else str(key)
        return name if name in self.shapes else None

    def visit(self, holder: Any, key: Any, value: Any) -> None:
        if id(value) in self.by_id:
            return  # the parameter itself
        if isinstance(value, (int, float, np.number)) or (isinstance(value, np.ndarray) and value.ndim == 0):
            if entry_name(str(key)) == "step" and not isinstance(value, bool):
                self.found.append(Entry(None, str(key), Slot(holder, key)))
        elif isinstance(value, dict):
            self._mapping(str(key), value, "")
        elif isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype == object):
            if self._parallel(value):
                self.found += [Entry(n, str(key), Slot(value, i)) for i, n in enumerate(self.order)]
            elif any(isinstance(v, np.ndarray) and v.shape in self.shapes.values() for v in value) and not self._params(value):
                self.lost.append(f"`{key}`")
        elif isinstance(value, np.ndarray) and value.shape in self.shapes.values():
            self.lost.append(f"`{key}`")

    def _parallel(self, items: Any) -> bool:
        """A sequence of one array per parameter, in the order the optimizer holds them."""
        if len(items) != len(self.order) or self._params(items):
            return False
        return all(isinstance(v, np.ndarray) and v.shape == self.shapes[n] for v, n in zip(items, self.order))

    def _mapping(self, entry: str, d: dict[Any, Any], prefix: str) -> None:
        """A dict keyed by parameter (or by layer, then by parameter): ``entry`` per parameter, or per-parameter
        dicts of entries; a dict keyed by entry names is looked into as the optimizer's own attributes are."""
        for key, value in d.items():
            param = self.param(key, prefix)
            below = f"{prefix}.{key}" if prefix else str(key)
            if param is not None and isinstance(value, dict):
                for name, v in value.items():
                    if isinstance(v, (np.ndarray, int, float, np.number)) and not isinstance(v, bool):
                        self.found.append(Entry(param, str(name), Slot(value, name)))
            elif param is not None and isinstance(value, np.ndarray) and id(value) not in self.by_id:
                self.found.append(Entry(param, entry, Slot(d, key)))
            elif isinstance(value, dict) and any(n.startswith(below + ".") for n in self.names):
                self._mapping(entry, value, below)
            elif isinstance(value, np.ndarray) and value.shape in self.shapes.values() and id(value) not in self.by_id:
                self.lost.append(f"`{entry}[{key!r}]`")
            elif not prefix and isinstance(key, str):
                self.visit(d, key, value)  # keyed by entry names: {"m": {parameter: array}, "t": 3}


class Stepping:
    """The optional training part of the adapter protocol (``layerdiff.optimizer``)."""

    def stepper(self, model: Any, spec: Spec, training: Training) -> NumpyStepper:
        return NumpyStepper(model, spec, training)

    def buffers(self, model: Any, spec: Spec) -> list[Buffer]:
        found = []
        for name, layer, slot in _buffer_slots(Network(model, spec)):
            value = slot.get()
            if value is not None:
                found.append(Buffer(name, layer, np.asarray(value)))
        return found

    def load_buffers(self, model: Any, spec: Spec, values: dict[str, np.ndarray | None]) -> None:
        for name, _, slot in _buffer_slots(Network(model, spec)):
            if name in values:
                slot.set(values[name])
