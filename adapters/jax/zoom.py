"""Zoom into one call of a JAX model: the call traced to its jaxpr (``jax.make_jaxpr``), then evaluated equation by
equation, each equation's output kept. A Flax module is found by its path through the same interception that
capture uses; "model" (or "") is the whole model, and the only name a plain function has."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal

from layerdiff.adapter import Feed, Op, Ops, Spec

from layerdiff.adapters.jax.forms import is_array


class _Zoomer:
    """The ``Calls`` of a zoom: every call runs as it is, except the one named, which runs through its jaxpr."""

    def __init__(self, target: str, inputs: list[np.ndarray] | None) -> None:
        self.target = target
        self.given = inputs
        self.found: Ops | None = None

    def call(self, name: str, kind: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.found is not None or name != self.target:
            return fn(*args, **kwargs)
        leaves, tree = jax.tree_util.tree_flatten(args)
        at = [i for i, leaf in enumerate(leaves) if is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.floating)]
        for k, i in enumerate(at):
            if self.given is not None and k < len(self.given) and tuple(self.given[k].shape) == tuple(leaves[i].shape):
                leaves[i] = jnp.asarray(self.given[k], dtype=leaves[i].dtype)

        def traced(*xs: Any) -> Any:
            given = list(leaves)
            for i, x in zip(at, xs):
                given[i] = x
            return fn(*jax.tree_util.tree_unflatten(tree, given), **kwargs)

        xs = [leaves[i] for i in at]
        self.found = Ops([np.asarray(x) for x in xs], [])  # set first: calls inside it, traced, run as they are
        closed, shapes = jax.make_jaxpr(traced, return_shape=True)(*xs)
        outs = _evaluate(closed, xs, self.found.ops)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), outs)


def _evaluate(closed: Any, args: list[Any], ops: list[Op]) -> list[Any]:
    """Evaluate a closed jaxpr equation by equation, appending each equation's first floating output to ``ops``."""
    jaxpr = closed.jaxpr
    env: dict[Any, Any] = dict(zip(jaxpr.constvars, closed.consts))
    made: dict[Any, int] = {}
    for k, (v, a) in enumerate(zip(jaxpr.invars, args)):
        env[v], made[v] = a, -1 - k

    def read(v: Any) -> Any:
        return v.val if isinstance(v, Literal) else env[v]

    for eqn in jaxpr.eqns:
        bound = eqn.primitive.get_bind_params(eqn.params)  # (subfuns, params) before JAX 0.7, params since
        subfuns, params = bound if isinstance(bound, tuple) else ([], bound)
        with getattr(getattr(eqn, "ctx", None), "manager", contextlib.nullcontext()):
            outs = eqn.primitive.bind(*subfuns, *[read(v) for v in eqn.invars], **params)
        outs = list(outs) if eqn.primitive.multiple_results else [outs]
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
        first = next((k for k, o in enumerate(outs) if jnp.issubdtype(o.dtype, jnp.floating) and o.size > 0), None)
        if first is None:
            continue
        reads = tuple(made[v] for v in eqn.invars if not isinstance(v, Literal) and v in made)
        ops.append(Op(str(eqn.params.get("name", eqn.primitive.name)), np.asarray(outs[first]), reads))
        made[eqn.outvars[first]] = len(ops) - 1
    return [read(v) for v in jaxpr.outvars]


def zoom(model: Any, spec: Spec, feed: Feed, layer: str, inputs: list[np.ndarray] | None) -> Ops | None:
    """The operations of call ``layer`` of ``model`` (the adapter's ``Held``) in one forward pass, called with
    ``inputs`` when given; None when no call has that name."""
    form, obj = model.form, model.obj
    variables = form.variables(obj)
    leaves = jax.tree_util.tree_leaves(variables["params"])
    x64 = any(np.dtype(leaf.dtype) == np.float64 for leaf in leaves)
    dtype = next((np.dtype(leaf.dtype) for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating)), np.dtype(np.float32))
    zoomer = _Zoomer(layer or "model", inputs)
    with contextlib.ExitStack() as stack:
        if x64:
            stack.enter_context(jax.enable_x64(True))
        stack.enter_context(jax.default_matmul_precision("highest"))
        stack.enter_context(form.intercepting(obj, zoomer))
        xs = [jnp.asarray(x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x) for x in feed.inputs]
        if zoomer.target == "model" and not form.flax:  # a plain function: the whole of it, its only call
            zoomer.call("model", "function", lambda *a: form.apply(obj, variables, list(a), zoomer), tuple(xs), {})
        else:
            form.apply(obj, variables, xs, zoomer)
    return zoomer.found
