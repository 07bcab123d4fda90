"""Capture a JAX model for one iteration: taps and Flax submodule calls report through ordered callbacks.

Each captured value passes through ``_probe``, a ``custom_vjp`` identity whose backward pass reports the gradient
arriving at the value; the forward values of a call are reported by one ``jax.debug.callback`` after it. The
callbacks are ordered effects, so they run in program order under ``jax.jit``, ``jax.grad`` and ``jax.vjp`` alike.
They carry only the layer's name, and report to the run in progress (``_session``): a compiled function reused from
the cache reports correctly too.

A float64 model runs with x64 enabled for the run only; matrix products run at "highest" precision, so that
reduced precision on an accelerator never passes for a bug. Both settings go into the dump. The precision setting
is part of the key of JAX's compilation cache, which keeps the run's traces (with taps) apart from the user's
(without): a function the model file compiled before the run is traced again. Teacher-forced replays run with jit
disabled: a compiled function cannot take substituted values from outside, and eagerly every call runs its Python
again.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from layerdiff.adapter import Feed, Forcing, Prepared, Spec
from layerdiff.capture import Forcer, finish, loss_record, positional, seeded_upstream
from layerdiff.errors import LayerdiffError, ModelFileError, raised_in
from layerdiff.records import LayerRecord, ParamRecord, Trace, tensor_key, unique_name
from layerdiff.tap import tapping

from layerdiff.adapters.jax.forms import Form, form_of, is_array, layout, map_named, path_name, require

CHANNELS_LAST = "N H W C"


class Site(NamedTuple):
    """Where a probe sits; static, so that compiled code carries it."""

    name: str  # the layer as traced: gradients go to its latest call still lacking them (backward runs in reverse)
    call: str  # this call's numbered name (``fc1#2``), to find what forcing substitutes; exact only eagerly
    key: str  # "grad_output", "grad_input.1"
    position: int  # among the call's array inputs or outputs


class Session:
    """One run: the records the callbacks build, and the trace-time bookkeeping of taps and calls."""

    def __init__(self, forcer: Forcer, source: str, owners: set[str]) -> None:
        self.forcer = forcer
        self.source = source
        self.owners = owners  # layers holding parameters themselves: captured even around captured calls
        self.records: list[LayerRecord] = []
        self.by_name: dict[str, LayerRecord] = {}
        self.calls: dict[str, list[LayerRecord]] = {}
        self.open: list[list[Any]] = []  # [name, has captured calls inside] of the calls being traced
        self.numbered: dict[str, None] = {}
        self.outputs: dict[str, Any] = {}

    # What the callbacks report.

    def forward(self, name: str, kind: str, inputs: list[Any], outputs: list[Any]) -> None:
        record = LayerRecord(unique_name(name, self.by_name), kind)
        for i, v in enumerate(inputs):
            record.tensors[tensor_key("input", i)] = np.array(v)
        for i, v in enumerate(outputs):
            record.tensors[tensor_key("output", i)] = np.array(v)
        self.by_name[record.name] = record
        self.records.append(record)
        self.calls.setdefault(name, []).append(record)

    def gradient(self, name: str, key: str, grad: Any) -> None:
        for record in reversed(self.calls.get(name, [])):
            if key not in record.tensors:
                record.tensors[key] = np.array(grad)
                return

    # What the traced code calls.

    def tap(self, name: str, value: Any) -> Any:
        if self.outputs.get(name) is value:
            return value  # a module's output, tapped under the module's own name: recorded once
        return self.call(name, "tap", lambda: value, (), {})

    def tap_grad(self, name: str, grad: Any) -> Any:
        return grad  # JAX differentiates every tapped value itself

    def call(self, name: str, kind: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.open and self.open[-1][0] == name:
            return fn(*args, **kwargs)  # super().__call__ inside the module being captured
        if self.open:
            self.open[-1][1] = True
        numbered = unique_name(name, self.numbered)
        self.numbered[numbered] = None
        leaves, tree = jax.tree_util.tree_flatten(args)
        inputs = [i for i, leaf in enumerate(leaves) if is_array(leaf)]
        for k, i in enumerate(inputs):
            leaves[i] = _probed(Site(name, numbered, tensor_key("grad_input", k), k), leaves[i])
        self.open.append([name, False])
        try:
            out = fn(*jax.tree_util.tree_unflatten(tree, leaves), **kwargs)
        finally:
            _, nested = self.open.pop()
        if nested and name not in self.owners:
            return out  # a container: the calls inside it say more
        out_leaves, out_tree = jax.tree_util.tree_flatten(out)
        outputs = [i for i, leaf in enumerate(out_leaves) if is_array(leaf)]
        jax.debug.callback(
            functools.partial(_report_forward, name, kind),
            [leaves[i] for i in inputs],
            [out_leaves[i] for i in outputs],
            ordered=True,
        )
        for k, i in enumerate(outputs):
            out_leaves[i] = _probed(Site(name, numbered, tensor_key("grad_output", k), k), out_leaves[i])
        out = jax.tree_util.tree_unflatten(out_tree, out_leaves)
        self.outputs[name] = out
        return out

    def substitute(self, site: Site, value: Any, kind: str) -> Any:
        """What forcing puts in place of an output (``kind="output"``) or of the gradient arriving at it
        (``"grad_output"``). A forced value that does not fit (another count or shape) is left out.
        """
        if not site.key.startswith("grad_output"):
            return value  # an input's probe: inputs are forced through the outputs that feed them
        forced = self.forcer.value(kind, site.call, site.position, tuple(value.shape))
        if forced is None:
            return value
        if isinstance(value, jax.core.Tracer):
            raise ModelFileError(
                f"Layer '{site.call}' of {self.source} cannot be teacher-forced: it runs inside a transformation "
                "that traces it even with jit disabled (vmap, checkpoint). Tap a value outside it instead."
            )
        return jnp.asarray(forced, dtype=value.dtype)


_session: Session | None = None  # the run in progress; the callbacks run on XLA's threads and find it here


def _report_forward(name: str, kind: str, inputs: list[Any], outputs: list[Any]) -> None:
    if _session is not None:
        _session.forward(name, kind, inputs, outputs)


def _report_gradient(name: str, key: str, grad: Any) -> None:
    if _session is not None:
        _session.gradient(name, key, grad)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _probe(site: Site, x: Any) -> Any:
    return x


def _probe_forward(site: Site, x: Any) -> tuple[Any, None]:
    return (x if _session is None else _session.substitute(site, x, "output")), None


def _probe_backward(site: Site, _: None, grad: Any) -> tuple[Any]:
    # The gradient as it arrives is recorded; a replay then hands on the forced one.
    jax.debug.callback(functools.partial(_report_gradient, site.name, site.key), grad, ordered=True)
    return (grad if _session is None else _session.substitute(site, grad, "grad_output"),)


_probe.defvjp(_probe_forward, _probe_backward)


def _probed(site: Site, x: Any) -> Any:
    """``x`` behind a probe; integer values have no gradient to report."""
    return _probe(site, x) if jnp.issubdtype(jnp.result_type(x), jnp.inexact) else x


def _named(tree: Any) -> list[tuple[str, Any]]:
    """Leaves with their paths, ``fc1.kernel``, in ``tree_flatten``'s order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_name(path), leaf) for path, leaf in flat]


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else "model"


def _param(form: Form, spec: Spec, name: str, value: Any, grad: Any = None) -> ParamRecord:
    axes = spec.layouts.get(name) or layout(form, name, np.ndim(value))
    # JAX arrays are immutable: a view records them without a copy.
    return ParamRecord(name, _owner(name), axes, np.asarray(value), None if grad is None else np.asarray(grad))


def _in_order(form: Form, obj: Any, params: list[ParamRecord]) -> list[ParamRecord]:
    rank = {name: i for i, name in enumerate(form.order(obj))}
    return sorted(params, key=lambda p: rank.get(p.name, len(rank)))


def _float64(name: str, leaf: Any) -> Any:
    return np.asarray(leaf, dtype=np.float64) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf


class Held:
    """The adapter's handle on a JAX model: its arrays are immutable, so loading parameters makes a new model
    object (``form.with_variables``), held here rather than written into anything of the core's."""

    def __init__(self, obj: Any, form: Form) -> None:
        self.obj = obj
        self.form = form


class JaxAdapter:
    name = "jax"

    def claims(self, obj: Any) -> bool:
        return form_of(obj) is not None

    def version(self) -> str:
        return str(jax.__version__)

    def prepare(self, obj: Any, spec: Spec, dtype: str) -> Prepared:
        form = require(obj, spec.source)
        if dtype == "float64":
            # Held as NumPy float64 between runs: JAX makes float64 arrays only while x64 is enabled.
            obj = form.with_variables(obj, map_named(_float64, form.variables(obj)))
        return Prepared(Held(obj, form), CHANNELS_LAST if form.flax else "")

    def parameters(self, model: Any, spec: Spec) -> list[ParamRecord]:
        form = model.form
        named = _named(form.variables(model.obj)["params"])
        return _in_order(form, model.obj, [_param(form, spec, name, v) for name, v in named])

    def load_parameters(self, model: Any, spec: Spec, values: dict[str, np.ndarray]) -> None:
        form = model.form
        variables = form.variables(model.obj)

        def load(name: str, leaf: Any) -> Any:
            return np.asarray(values[name], dtype=leaf.dtype) if name in values else leaf

        model.obj = form.with_variables(model.obj, {**variables, "params": map_named(load, variables["params"])})

    def attach(self, model: Any, spec: Spec, placements: dict[str, str] | None = None) -> Any:
        """Record one iteration of the user's own loop (``layerdiff.record``)."""
        from layerdiff.adapters.jax.record import Attachment

        return Attachment(model, spec, placements)

    def run(self, model: Any, spec: Spec, feed: Feed, forcing: Forcing | None = None) -> Trace:
        global _session
        form, obj = model.form, model.obj
        variables = form.variables(obj)
        named = _named(variables["params"])
        x64 = any(np.dtype(leaf.dtype) == np.float64 for _, leaf in named)
        forcer = Forcer(forcing)
        session = Session(forcer, spec.source, {_owner(n) for n, _ in named})
        if jax.config.jax_default_matmul_precision is not None:
            jax.clear_caches()  # the user's traces and the run's would share cache keys: trace again, with the taps
        with contextlib.ExitStack() as stack:
            if x64:
                stack.enter_context(jax.enable_x64(True))
            stack.enter_context(jax.default_matmul_precision("highest"))
            if forcing is not None:
                stack.enter_context(jax.disable_jit())
            stack.enter_context(form.intercepting(obj, session))
            stack.enter_context(tapping(session))
            settings = _settings(forcing is not None)
            _session = session
            try:
                loss, upstream, grads = _iterate(spec, form, obj, variables, feed, session)
            finally:
                _session = None
        params = _in_order(form, obj, [_param(form, spec, name, v, g) for (name, v), g in zip(named, grads)])
        return finish(session.records, params, loss, upstream, forcer, settings)

    def zoom(self, model: Any, spec: Spec, feed: Feed, layer: str, inputs: list[np.ndarray] | None) -> Any:
        from layerdiff.adapters.jax.zoom import zoom

        return zoom(model, spec, feed, layer, inputs)


def _settings(forced: bool) -> dict[str, str]:
    """JAX's settings for the run, recorded in the dump."""
    settings = {
        "jax_enable_x64": str(bool(jax.config.jax_enable_x64)),
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "jax_backend": jax.default_backend(),
        "jax_jit": "disabled for teacher forcing" if forced else "as the model file wrote it",
        "float32_matmul": _float32_matmul(),
    }
    if "flax" in sys.modules:
        settings["flax_version"] = str(getattr(sys.modules["flax"], "__version__", ""))
    return settings


def _float32_matmul() -> str:
    """What a float32 matrix product computes in, as layerdiff judges rounding by it: an accelerator's default is
    reduced (TF32 on a GPU, bfloat16 passes on a TPU); "high" (three bfloat16 passes) is taken as TF32."""
    asked = str(jax.config.jax_default_matmul_precision or "default").lower()
    if asked in ("highest", "float32"):
        return "float32"
    if asked in ("bfloat16", "fastest"):
        return "bfloat16"
    if asked in ("tensorfloat32", "high", "bfloat16_3x"):
        return "tf32"
    return {"gpu": "tf32", "cuda": "tf32", "rocm": "tf32", "tpu": "bfloat16"}.get(jax.default_backend(), "float32")


def _iterate(
    spec: Spec, form: Form, obj: Any, variables: dict[str, Any], feed: Feed, session: Session
) -> tuple[float, list[np.ndarray], list[Any]]:
    leaves, tree = jax.tree_util.tree_flatten(variables["params"])
    floating = [np.dtype(leaf.dtype) for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating)]
    dtype = floating[0] if floating else jnp.result_type(float)
    positional(feed, spec.source, "JAX")
    inputs = [jnp.asarray(x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x) for x in feed.inputs]
    differentiated = [i for i, x in enumerate(inputs) if jnp.issubdtype(x.dtype, jnp.floating)]
    rest = {k: jax.tree_util.tree_map(jnp.asarray, v) for k, v in variables.items() if k != "params"}

    def forward(params: list[Any], *xs: Any) -> list[Any]:
        given = list(inputs)
        for i, x in zip(differentiated, xs):
            given[i] = x
        out = form.apply(obj, {**rest, "params": jax.tree_util.tree_unflatten(tree, params)}, given, session)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    try:
        outputs, pullback = jax.vjp(forward, [jnp.asarray(leaf) for leaf in leaves], *[inputs[i] for i in differentiated])
    except LayerdiffError:
        raise
    except Exception as exc:
        raise raised_in(spec.source, exc, "in its forward pass") from None
    if not all(isinstance(o, jax.Array) and jnp.issubdtype(o.dtype, jnp.floating) for o in outputs):
        raise ModelFileError(
            f"The model in {spec.source} returned {[type(o).__name__ for o in outputs]}; return a floating-point "
            "array or a tuple of them."
        )
    jax.effects_barrier()  # the forward records, before the loss's
    try:
        value, upstream, cotangents = _upstream(spec, feed, outputs, session)
        grads = pullback(cotangents)[0]
        jax.effects_barrier()
    except LayerdiffError:
        raise
    except Exception as exc:
        raise raised_in(spec.source, exc, "in its loss or backward pass") from None
    return value, upstream, grads


def _upstream(spec: Spec, feed: Feed, outputs: list[Any], session: Session) -> tuple[float, list[np.ndarray], list[Any]]:
    """The loss and the gradient on each output: from the loss, or the feed's seeded gradient."""
    if spec.loss is None:
        value, upstream = seeded_upstream(feed, [np.asarray(o) for o in outputs])
        return value, upstream, [jnp.asarray(u) for u in upstream]
    logits = outputs[0]
    targets = None if feed.targets is None else jnp.asarray(feed.targets)
    if targets is not None and jnp.issubdtype(targets.dtype, jnp.floating):
        targets = targets.astype(logits.dtype)
    # Per-sample losses (optax's) are averaged, as the NumPy side does.
    value, pullback = jax.vjp(lambda o: jnp.mean(spec.loss(o, targets)), logits)
    (dlogits,) = pullback(jnp.ones_like(value))
    kind = getattr(spec.loss, "__name__", type(spec.loss).__name__)
    session.records.append(loss_record(kind, np.array(logits), np.array(value), np.array(dlogits)))
    return float(value), [], [dlogits] + [jnp.zeros_like(o) for o in outputs[1:]]
