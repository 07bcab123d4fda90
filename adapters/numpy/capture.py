"""Drive a hand-written NumPy network layer by layer, however its author laid out parameters and gradients.

Forms taken without changes to the user's layers:
- a network object with ``layers`` (list or dict) of objects with ``forward``/``backward``; a bare list or dict of
  them; or one object with ``forward``/``backward`` whose inside is marked with ``tap``/``tap_grad``;
- ``forward(x)`` returning its output or storing ``self.output``, with an optional training flag;
- ``backward(dout)`` returning the input gradient or storing it as ``dinputs``/``dX``/``dx``; a
  ``backward(dout, learning_rate)`` that updates the weights itself (``backward.py``);
- parameters and gradients wherever ``network.py`` finds them; weights made on the first forward (``build``).
Each run starts from a fresh copy of the model as its file built it (with the weights it was given), so that
layers keeping state between calls (inputs appended to a list, gradients accumulated) run the same every time;
except in a file that gives its own ``update(model, lr)``, which reads what the run left in the layers.
A model file can say where things are for anything else (``params_of``, ``grads_of``, ``input_grad_of``).
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from layerdiff.adapter import Feed, Forcing, Prepared, Spec
from layerdiff.adapters.numpy import backward, gates, losses
from layerdiff.adapters.numpy.layouts import channels_last
from layerdiff.adapters.numpy.network import Network, Param, all_layers, is_layer
from layerdiff.adapters.numpy.taps import Copies, NumpyTapper, forced
from layerdiff.capture import Forcer, Raised, finish, loss_record, positional, seeded_upstream
from layerdiff.errors import ModelFileError, raised_in, raised_line
from layerdiff.records import Failure, LayerRecord, ParamRecord, Trace, snapshot, tensor_key
from layerdiff.tap import tapping

INPUT_GRAD_ATTRS = ("dinputs", "dinput", "dX", "dx", "grad_input", "dout_prev")
TRAINING_FLAGS = ("training", "train", "is_training", "train_mode")


class NumpyAdapter:
    name = "numpy"
    fallback = True  # claims any object with forward and backward: the frameworks' adapters are asked first

    def claims(self, obj: Any) -> bool:
        if isinstance(obj, (list, tuple, dict)):
            return all_layers(obj)
        layers = getattr(obj, "layers", None)
        return is_layer(obj) or (isinstance(layers, (list, tuple, dict)) and all_layers(layers))

    def version(self) -> str:
        return np.__version__

    def prepare(self, obj: Any, spec: Spec, dtype: str) -> Prepared:
        net = Network(obj, spec)
        if dtype == "float64":
            _cast(net)
        layout = "N H W C" if any(channels_last(layer.obj) for layer in net.layers) else ""
        return Prepared(obj, layout)

    def build(self, model: Any, spec: Spec, feed: Feed) -> None:
        """Make the weights of layers that make them on their first forward (tinynn's, numpy-ml's): when a forward
        on a copy finds more parameters than the model has, one forward on the feed's inputs, after which what
        that forward left in lists and counters is put back as it was."""
        if not feed.inputs:
            return
        try:
            # What the pristine copy is for (its lists and counters) holds no weight: it shares the model's arrays.
            weights = [p.slot.get() for p in Network(model, spec).params()]
            probe, pristine = copy.deepcopy(model), copy.deepcopy(model, {id(w): w for w in weights})
        except Exception:
            return  # cannot be copied: its weights are taken as the file made them
        before = len(Network(model, spec).params())
        _first_forward(Network(probe, spec), feed, spec)
        if len(Network(probe, spec).params()) <= before:
            return
        net = Network(model, spec)
        _first_forward(net, feed, spec)
        for layer, untouched in zip(net.layers, Network(pristine, spec).layers):
            _restore_state(layer.obj, untouched.obj)
        _cast(Network(model, spec), like=feed.inputs)

    def parameters(self, model: Any, spec: Spec) -> list[ParamRecord]:
        net = Network(model, spec)
        return gates.packed(spec, [ParamRecord(p.name, p.owner, net.layout(p), snapshot(p.slot.get())) for p in net.params()])

    def load_parameters(self, model: Any, spec: Spec, values: dict[str, np.ndarray]) -> None:
        net = Network(model, spec)
        own = [ParamRecord(p.name, p.owner, net.layout(p), np.asarray(p.slot.get())) for p in net.params()]
        values = gates.unpacked(spec, values, own)
        for p in net.params():
            if p.name in values:
                current = p.slot.get()
                if current.shape == values[p.name].shape:
                    current[...] = values[p.name]  # in place: the layer may hold the array under two names
                else:
                    p.slot.set(values[p.name].astype(current.dtype))

    def attach(self, model: Any, spec: Spec, placements: dict[str, str] | None = None) -> Any:
        """Record one iteration of the user's own loop (``layerdiff.record``)."""
        from layerdiff.adapters.numpy.record import Attachment

        return Attachment(model, spec, placements)

    def run(self, model: Any, spec: Spec, feed: Feed, forcing: Forcing | None = None) -> Trace:
        positional(feed, spec.source, "NumPy")
        # A file's own update(model, lr) reads the gradients the run left in the layers: it runs the model itself.
        fresh, shared = (model, []) if "update" in spec.glue else _fresh(model, spec)
        net = Network(fresh, spec)
        records: list[LayerRecord] = []
        forcer = Forcer(forcing)
        dtype = _dtype_of(net)
        inputs = [x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x for x in feed.inputs]
        notes: dict[str, str] = {}
        with _tapping(records, forcer), warnings.catch_warnings(), _read_only(shared):
            # Overflow or log(0) in the user's network is a finding, reported from the recorded NaN/Inf,
            # not a reason to stop, even where warnings are errors (pytest -W error).
            warnings.simplefilter("default", RuntimeWarning)
            copies = Copies()
            outputs, layer_records = _forward(net, inputs, records, forcer, copies, shared)
            loss, douts = _loss(spec, outputs, feed, records, copies, notes)
            found, failed = _backward(net, layer_records, douts, forcer, copies, shared)
        if fresh is not model:
            _check_unchanged(net, Network(model, spec), spec)
            _keep_buffers(fresh, model, spec)
        for r in list(records):
            if r.name == "model" and net.whole is not None and len(records) > 1:
                records.remove(r)  # taps inside the network say more than its outer input and output
        unfinished = failed[0].unfinished if failed is not None else ()  # their gradients are not this run's
        params = [_record(net, p, found, p.layer.name in unfinished, private=fresh is not model) for p in net.params()]
        notes.update({f"gradient of {p.name}": p.note for p in params if p.note})
        settings = {f"note.{k}": v for k, v in notes.items()}
        trace = finish(records, gates.packed(spec, params), loss, [] if spec.loss is not None else douts, forcer, settings)
        if failed is not None:
            trace.failure = failed[0]
            raise Raised(failed[1], trace)
        return trace


def _record(net: Network, p: Param, found: dict[str, backward.Stepped], unfinished: bool = False, private: bool = False) -> ParamRecord:
    """A parameter after the run: its value as it is (forward and backward do not change it) and its gradient,
    copied, since hand-written layers accumulate into and zero their gradient arrays in place on the next run, unless
    the run's copy of the model was ``private`` (no later run touches its arrays); none for a layer whose backward
    never ran (what it holds is not this run's)."""
    if unfinished:
        return ParamRecord(p.name, p.owner, net.layout(p), np.asarray(p.slot.get()), None)
    held = grad = net.grad(p)  # the run's copy's own array, unless the layer's backward step found it
    note = ""
    stepped = found.get(p.layer.name)
    if grad is None and stepped is not None and p.key in stepped.grads:
        grad, note = stepped.grads[p.key], stepped.notes[p.key]
    kept = None if grad is None else np.asarray(grad) if private and grad is held else snapshot(grad)
    return ParamRecord(p.name, p.owner, net.layout(p), np.asarray(p.slot.get()), kept, note=note)


def _tapping(records: list[LayerRecord], forcer: Forcer) -> Any:
    return tapping(NumpyTapper(records, forcer))


def _keep_buffers(ran: Any, model: Any, spec: Spec) -> None:
    """The running statistics the run moved, handed to the model itself: a training step reads them from it, as
    the model's own loop would (``run`` starts each run anew from them only where the steps say so)."""
    from layerdiff.adapters.numpy.optim import Stepping

    held = Stepping()
    held.load_buffers(model, spec, {b.name: b.value for b in held.buffers(ran, spec)})


def _fresh(model: Any, spec: Spec) -> tuple[Any, list[np.ndarray]]:
    """A copy to run, so that what a run leaves in the layers never reaches the next; the model itself when it
    cannot be copied (then layers that keep state between calls are the file's to reset). Its weights are the
    model's own arrays, made read-only for the run (a copy of every weight per run costs as much memory and time as
    the weights), except those of a layer whose backward updates them (a learning-rate argument): copied, for the
    update to land on the copy. Returns the copy and the arrays it shares."""
    try:
        shared = _shareable(model, spec)
        return copy.deepcopy(model, {id(a): a for a in shared}), shared
    except Exception:
        return model, []


def _shareable(model: Any, spec: Spec) -> list[np.ndarray]:
    net = Network(model, spec)
    updating = set()
    for layer in net.layers:
        try:
            lr = backward.learning_rate_argument(layer.obj.backward, spec.update_in_backward, layer.name)
        except Exception:
            lr = "unknown"  # said when the run calls it; copied meanwhile
        if lr is not None:
            updating.add(layer.name)
    found = [p.slot.get() for p in net.params() if p.layer.name not in updating]
    return [a for a in found if isinstance(a, np.ndarray) and a.flags.writeable and a.base is None]


@contextmanager
def _read_only(arrays: list[np.ndarray]) -> Iterator[None]:
    """The model's weights, shared with the run's copy, protected from it: writing into one raises (``_moved``)."""
    for a in arrays:
        a.flags.writeable = False
    try:
        yield
    finally:
        for a in arrays:
            a.flags.writeable = True


def _moved(exc: Exception, shared: list[np.ndarray], source: str, layer: str, where: str) -> ModelFileError | None:
    """The error for a layer that wrote into a weight during the run (NumPy refused: it was read-only)."""
    if not (shared and isinstance(exc, ValueError) and "read-only" in str(exc)):
        return None
    return ModelFileError(
        f"{source} changes its parameters during an iteration: layer '{layer}' writes into its weights in {where} "
        "(an optimizer step inside backward?). layerdiff compares one iteration on fixed weights: if backward takes "
        "the learning rate as an argument, name it with update_in_backward = \"learning_rate\" in the model file; "
        "otherwise move the update out of backward."
    )


def _forward(
    net: Network, inputs: list[np.ndarray], records: list[LayerRecord], forcer: Forcer, copies: Copies, shared: list[np.ndarray]
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
            raise _moved(exc, shared, net.spec.source, layer.name, "forward") or raised_in(
                net.spec.source, exc, f"in the forward pass of layer '{layer.name}'") from None
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
        values = forced(forcer, "output", layer.name, values)
    return [np.asarray(v) for v in values], layer_records


def _loss(
    spec: Spec, outputs: list[np.ndarray], feed: Feed, records: list[LayerRecord], copies: Copies, notes: dict[str, str]
) -> tuple[float, list[np.ndarray]]:
    if spec.loss is None:
        return seeded_upstream(feed, outputs)
    if isinstance(spec.loss, str):
        raise ModelFileError(f"loss = {spec.loss!r} in {spec.source}: only a PyTorch model returns its own loss; give a loss function.")
    logits = outputs[0]
    recorded = copies.received(logits)  # before the loss runs: losses often shift their input in place
    try:
        value, dlogits, value_of = losses.call(spec.loss, logits, feed.targets, spec.source)
    except ModelFileError:
        raise
    except Exception as exc:
        raise raised_in(spec.source, exc, "in its loss") from None
    records.append(loss_record(type(spec.loss).__name__, recorded, np.asarray(value, dtype=logits.dtype), copies.handed_on(dlogits)))
    copies.step()
    said = losses.reduction(value_of, recorded, dlogits)
    if said:
        notes["loss"] = f"its loss ({type(spec.loss).__name__}): {said}"
    return value, [np.asarray(dlogits)]


def _backward(
    net: Network, layer_records: list[LayerRecord], douts: list[np.ndarray], forcer: Forcer, copies: Copies,
    shared: list[np.ndarray],
) -> tuple[dict[str, backward.Stepped], tuple[Failure, ModelFileError] | None]:
    """Every layer's backward, from the last: what each step found of its gradients; when one raises, the failure,
    and the error a command stops with."""
    grads: list[np.ndarray] = douts
    glue = net.spec.glue.get("input_grad_of")
    by_layer: dict[str, dict[str, Param]] = {}
    for p in net.params():
        by_layer.setdefault(p.layer.name, {})[p.key] = p
    found = {}
    for layer, record in zip(reversed(net.layers), reversed(layer_records)):
        for i, g in enumerate(grads):
            record.tensors[tensor_key("grad_output", i)] = copies.received(g)
        grads = forced(forcer, "grad_output", layer.name, grads)
        where = f"layer '{layer.name}' ({type(layer.obj).__name__}) of {net.spec.source}"
        own = by_layer.get(layer.name, {})
        lr = backward.learning_rate_argument(layer.obj.backward, net.spec.update_in_backward, where)
        try:
            stepped = backward.step(layer.obj, grads, net.held, lambda k: _named(net, own, k), lr, where)
        except ModelFileError:
            raise
        except Exception as exc:
            moved = _moved(exc, shared, net.spec.source, layer.name, "backward")
            if moved is not None:
                raise moved from None
            unfinished = tuple(l.name for l in net.layers[: net.layers.index(layer) + 1])
            return found, (Failure(layer.name, raised_line(exc), unfinished), raised_in(net.spec.source, exc, f"in the backward pass of layer '{layer.name}'"))
        found[layer.name] = stepped
        dx = _glued_input_grad(glue, layer.obj, stepped.returned, net.spec.source) if glue is not None else _input_grad(layer.obj, stepped.returned)
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
    return found, None


def _named(net: Network, own: dict[str, Param], key: str) -> bool:
    """Whether a name gives the gradient of parameter ``key`` (the file's grads_of always does: it is asked after)."""
    return "grads_of" in net.spec.glue or (key in own and net.grad(own[key]) is not None)


def _check_unchanged(ran: Network, given: Network, spec: Spec) -> None:
    """Refuse a run that moved the weights: an optimizer step inside backward that layerdiff was not told of."""
    for p, q in zip(ran.params(), given.params()):
        a, b = np.asarray(p.slot.get()), np.asarray(q.slot.get())
        if a is b:
            continue  # shared, and read-only for the run
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
            raise ModelFileError(
                f"{spec.source} changes its parameters during an iteration: '{p.name}' (layer '{p.layer.name}') differs "
                "after backward (an optimizer step inside backward?). layerdiff compares one iteration on fixed weights: "
                "if backward takes the learning rate as an argument, name it with update_in_backward = \"learning_rate\" "
                "in the model file (layerdiff then takes the weight change at a rate of 1 as the gradient); otherwise "
                "move the update out of backward."
            )


def _first_forward(net: Network, feed: Feed, spec: Spec) -> None:
    values: list[Any] = list(feed.inputs) if net.whole is not None else list(feed.inputs[:1])
    for layer in net.layers:
        try:
            out = _call_forward(layer.obj, values)
        except Exception as exc:
            raise raised_in(spec.source, exc, f"in the forward pass of layer '{layer.name}' (the one that builds its weights)") from None
        out = getattr(layer.obj, "output", None) if out is None else out
        values = list(out) if isinstance(out, tuple) else [out]


def _call_forward(layer: Any, values: list[Any]) -> Any:
    kwargs = {}
    params = backward.argument_names(layer.forward) or []
    for flag in TRAINING_FLAGS:
        if flag in params:
            kwargs[flag] = True
    return layer.forward(*values, **kwargs)


def _glued_input_grad(glue: Any, obj: Any, returned: Any, source: str) -> Any:
    try:
        return glue(obj, returned)
    except Exception as exc:
        raise raised_in(source, exc, f"in its input_grad_of({type(obj).__name__})") from None


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


def _cast(net: Network, like: list[np.ndarray] | None = None) -> None:
    """Every floating parameter in float64 (after ``build``: only when the feed is float64, as the run will be)."""
    if like is not None and not any(x.dtype == np.float64 for x in like):
        return
    for p in net.params():
        value = p.slot.get()
        if value.dtype != np.float64 and np.issubdtype(value.dtype, np.floating):
            p.slot.set(value.astype(np.float64))


def _restore_state(obj: Any, before: Any, depth: int = 2) -> None:
    """Put back what a forward left in an object's lists and counters (numpy-ml appends every input to a list)."""
    if not hasattr(obj, "__dict__") or not hasattr(before, "__dict__") or depth < 0:
        return
    for attr, old in vars(before).items():
        new = getattr(obj, attr, None)
        if isinstance(old, list) and isinstance(new, list) or _counter(old) and _counter(new):
            setattr(obj, attr, copy.deepcopy(old))
        elif isinstance(old, dict) and isinstance(new, dict):
            for k, v in old.items():
                if isinstance(v, list) and isinstance(new.get(k), list) or _counter(v) and _counter(new.get(k)):
                    new[k] = copy.deepcopy(v)
        elif hasattr(old, "__dict__") and not isinstance(old, np.ndarray):
            _restore_state(new, old, depth - 1)


def _counter(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dtype_of(net: Network) -> Any:
    for p in net.params():
        value = p.slot.get()
        if np.issubdtype(value.dtype, np.floating):
            return value.dtype
    return np.float64
