"""Recording a JAX model inside the user's own training loop: Flax submodule calls and taps captured for one
iteration, as a run captures them.

JAX hands the gradients back to the caller instead of leaving them on the model, so the parameter gradients come
from the user: ``rec.gradients(grads)`` inside the recording. The iteration runs with jit disabled, so that every
call goes through the Python that records it (a compiled step would replay what it traced before the recording).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import jax
import numpy as np

from layerdiff.adapter import Spec
from layerdiff.capture import Forcer
from layerdiff.errors import ModelFileError
from layerdiff.records import ParamRecord, Trace
from layerdiff.tap import tapping

from layerdiff.adapters.jax import capture
from layerdiff.adapters.jax.capture import Session, Site, _named, _owner, _param, _probed
from layerdiff.adapters.jax.forms import PATH_ATTR, Function, Nnx, is_array, require

ROOT = "model"
UPSTREAM = "(the model's output)"  # the probe on the root's output: the gradient that stands for the loss


class LoopSession(Session):
    """A run's session that also keeps the first call of the model: its inputs, and the gradient at its output."""

    def __init__(self, source: str, owners: set[str]) -> None:
        super().__init__(Forcer(None), source, owners)
        self.inputs: list[np.ndarray] | None = None
        self.upstream: dict[int, np.ndarray] = {}

    def call(self, name: str, kind: str, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        first = name == ROOT and self.inputs is None and not self.open
        if first:
            self.inputs = [np.array(leaf) for leaf in jax.tree_util.tree_leaves(args) if is_array(leaf)]
        out = super().call(name, kind, fn, args, kwargs)
        if not first:
            return out
        leaves, tree = jax.tree_util.tree_flatten(out)
        arrays = [i for i, leaf in enumerate(leaves) if is_array(leaf)]
        for k, i in enumerate(arrays):
            leaves[i] = _probed(Site(UPSTREAM, UPSTREAM, "grad_output", k), leaves[i])
        return jax.tree_util.tree_unflatten(tree, leaves)

    def gradient(self, name: str, key: str, grad: Any) -> None:
        if name == UPSTREAM:
            self.upstream.setdefault(len(self.upstream), np.array(grad))
            return
        super().gradient(name, key, grad)


class Attachment:
    """The interception of one recording, live until ``detach``."""

    rank = 0
    world_size = 1

    def __init__(self, obj: Any, spec: Spec, placements: dict[str, str] | None = None) -> None:
        self.form = require(obj, spec.source)
        if isinstance(self.form, Function):
            raise ModelFileError(
                "layerdiff.record records a Flax NNX module or a Linen (module, variables) pair: a pure (apply_fn, "
                "params) function is called by your own code, out of its sight. Write a model file for it instead."
            )
        self.obj, self.spec = obj, spec
        named = _named(self.form.variables(obj)["params"])
        # In definition order, read now: an NNX step (nnx.grad, nnx.update) sets the attributes again, sorted.
        rank = {name: i for i, name in enumerate(self.form.order(obj))}
        self.values = {name: np.array(leaf) for name, leaf in sorted(named, key=lambda n: rank.get(n[0], len(rank)))}
        self.grads: dict[str, np.ndarray] = {}
        self.session = LoopSession(spec.source, {_owner(n) for n, _ in named})
        self.stack = contextlib.ExitStack()
        self.stack.enter_context(jax.disable_jit())
        self.stack.enter_context(self.form.intercepting(obj, self.session))
        self.stack.enter_context(tapping(self.session))
        if isinstance(self.form, Nnx):
            self.stack.enter_context(_paths(obj))
        capture._session = self.session

    def gradients(self, grads: Any) -> None:
        """The parameter gradients the user's step computed (a pytree of the parameters, or an NNX state)."""
        if "flax" in sys.modules and hasattr(grads, "flat_state"):
            from flax import nnx

            grads = nnx.to_pure_dict(grads)
        self.grads = {name: np.array(leaf) for name, leaf in _named(grads)}
        unknown = sorted(set(self.grads) - set(self.values))
        if unknown:
            raise ModelFileError(
                f"The gradients given to the recording name {', '.join(unknown[:3])}, which the model has not: give "
                "the gradients of its parameters, as jax.grad or nnx.grad returned them."
            )

    def detach(self) -> Trace:
        jax.effects_barrier()  # the callbacks of the iteration, before they are read
        capture._session = None
        self.stack.close()
        params: list[ParamRecord] = [
            _param(self.form, self.spec, name, value, self.grads.get(name)) for name, value in self.values.items()
        ]
        session = self.session
        for r in session.records:
            r.params = [p.name for p in params if p.layer == r.name]
        upstream = [session.upstream[k] for k in sorted(session.upstream)]
        return Trace(session.records, params, None, inputs=session.inputs or [], upstream=upstream)


@contextlib.contextmanager
def _paths(obj: Any) -> Any:
    """The user's NNX module and its submodules named by their paths for the recording, as a run names its copy's."""
    from flax import nnx

    subs = [sub for _, sub in nnx.iter_modules(obj)]
    for path, sub in nnx.iter_modules(obj):
        object.__setattr__(sub, PATH_ATTR, ".".join(map(str, path)) or ROOT)
    try:
        yield
    finally:
        for sub in subs:
            if PATH_ATTR in vars(sub):
                object.__delattr__(sub, PATH_ATTR)

