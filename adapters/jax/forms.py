"""The three shapes a JAX model takes in a model file: how each holds its arrays, and how it is called.

    model = (apply_fn, params)           a pure function ``apply_fn(params, *inputs)``, layers marked with ``tap``
    model = (linen_module, variables)    a Flax Linen module and the variables ``module.init`` returned
    model = nnx_module                   a Flax NNX module

Each form hands its arrays out as collections of nested dicts, ``{"params": {"fc1": {"kernel": ...}}, ...}``, and
takes them back the same way; only ``"params"`` is differentiated and synced, listed in the order the model
defines them (``jax.tree_util`` sorts keys: ``bias`` would come before ``kernel``, where PyTorch's ``weight`` comes
first, and pairing by order would fail). Flax submodule calls go through ``Calls.call`` (Linen's by
``nn.intercept_methods``, NNX's by wrapping the ``__call__`` of the module classes for the duration of a run),
named by their path: ``encoder.fc1``, or ``model`` for the root.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Protocol

import jax
import numpy as np

from layerdiff.errors import ModelFileError

Variables = dict[str, Any]
PATH_ATTR = "_layerdiff_path"  # set on the run's own copy of an NNX module; NNX keeps it through split and merge


class Calls(Protocol):
    def call(self, name: str, kind: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...


class Form(Protocol):
    flax: bool  # Flax's conventions: channels-last activations, (…, in, out) kernels

    def variables(self, obj: Any) -> Variables: ...

    def with_variables(self, obj: Any, variables: Variables) -> Any: ...

    def apply(self, obj: Any, variables: Variables, inputs: list[Any], calls: Calls) -> Any: ...

    def order(self, obj: Any) -> list[str]:
        """Parameter names in the order the model defines them."""

    def intercepting(self, obj: Any, calls: Calls) -> contextlib.AbstractContextManager[None]: ...


def is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


class Function:
    flax = False

    def variables(self, obj: Any) -> Variables:
        return {"params": obj[1]}

    def with_variables(self, obj: Any, variables: Variables) -> Any:
        return (obj[0], variables["params"])

    def apply(self, obj: Any, variables: Variables, inputs: list[Any], calls: Calls) -> Any:
        return obj[0](variables["params"], *inputs)

    def order(self, obj: Any) -> list[str]:
        return list(_in_order(obj[1]))

    def intercepting(self, obj: Any, calls: Calls) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # its layers are its taps


class Linen:
    flax = True

    def variables(self, obj: Any) -> Variables:
        return dict(obj[1])

    def with_variables(self, obj: Any, variables: Variables) -> Any:
        return (obj[0], variables)

    def apply(self, obj: Any, variables: Variables, inputs: list[Any], calls: Calls) -> Any:
        return obj[0].apply(variables, *inputs)

    def order(self, obj: Any) -> list[str]:
        return list(_in_order(obj[1]["params"]))

    @contextlib.contextmanager
    def intercepting(self, obj: Any, calls: Calls) -> Iterator[None]:
        from flax import linen

        def interceptor(next_fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], context: Any) -> Any:
            if context.method_name != "__call__":
                return next_fun(*args, **kwargs)
            module = context.module
            return calls.call(".".join(module.path) or "model", type(module).__name__, next_fun, args, kwargs)

        with linen.intercept_methods(interceptor):
            yield


class Nnx:
    flax = True

    def variables(self, obj: Any) -> Variables:
        from flax import nnx

        _, params, rest = nnx.split(obj, nnx.Param, ...)
        return {"params": nnx.to_pure_dict(params), "state": nnx.to_pure_dict(rest)}

    def with_variables(self, obj: Any, variables: Variables) -> Any:
        from flax import nnx

        _, params, rest = nnx.split(obj, nnx.Param, ...)
        nnx.replace_by_pure_dict(params, variables["params"])
        nnx.replace_by_pure_dict(rest, variables["state"])
        nnx.update(obj, params, rest)
        return obj

    def apply(self, obj: Any, variables: Variables, inputs: list[Any], calls: Calls) -> Any:
        from flax import nnx

        # A copy holding the traced values: the user's module is left as it was.
        graph, params, rest = nnx.split(obj, nnx.Param, ...)
        nnx.replace_by_pure_dict(params, variables["params"])
        nnx.replace_by_pure_dict(rest, variables["state"])
        module = nnx.merge(graph, params, rest)
        for path, sub in nnx.iter_modules(module):
            object.__setattr__(sub, PATH_ATTR, ".".join(map(str, path)) or "model")
        return module(*inputs)

    def order(self, obj: Any) -> list[str]:
        return list(_in_order(obj))

    @contextlib.contextmanager
    def intercepting(self, obj: Any, calls: Calls) -> Iterator[None]:
        from flax import nnx

        classes = {type(sub) for _, sub in nnx.iter_modules(obj)}
        # Resolved before any is replaced, so that a subclass's inherited __call__ is not wrapped twice.
        originals = {cls: cls.__call__ for cls in classes}
        own = {cls: cls.__dict__["__call__"] for cls in classes if "__call__" in cls.__dict__}
        for cls in classes:
            setattr(cls, "__call__", _routed(originals[cls], calls))
        try:
            yield
        finally:
            for cls in classes:
                if cls in own:
                    setattr(cls, "__call__", own[cls])
                else:
                    delattr(cls, "__call__")


def _routed(original: Callable[..., Any], calls: Calls) -> Callable[..., Any]:
    @functools.wraps(original)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(self, PATH_ATTR, None)
        if name is None:  # a module of another model, or the user's own outside the run's copy
            return original(self, *args, **kwargs)
        return calls.call(name, type(self).__name__, functools.partial(original, self), args, kwargs)

    return __call__


def _in_order(node: Any, prefix: str = "") -> Iterator[str]:
    """Paths of the parameters below ``node``: dicts in insertion order, NNX modules in attribute order."""
    nnx = sys.modules.get("flax.nnx")
    if is_array(node) or nnx is not None and isinstance(node, nnx.Param):
        yield prefix
        return
    if isinstance(node, Mapping):
        items: Any = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    elif nnx is not None and isinstance(node, nnx.Pytree):
        items = ((k, v) for k, v in vars(node).items() if not k.startswith("_"))
    else:
        return
    for key, value in items:
        yield from _in_order(value, _join(prefix, key))


def map_named(fn: Callable[[str, Any], Any], tree: Any, prefix: str = "") -> Any:
    """``tree`` with each leaf replaced by ``fn(its path, leaf)``; dicts keep their order (``jax.tree_util`` sorts)."""
    if isinstance(tree, Mapping):
        return {k: map_named(fn, v, _join(prefix, k)) for k, v in tree.items()}
    if type(tree) in (list, tuple):
        return type(tree)(map_named(fn, v, _join(prefix, i)) for i, v in enumerate(tree))
    return jax.tree_util.tree_map_with_path(lambda path, leaf: fn(_join(prefix, path_name(path)), leaf), tree)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix and str(key) else prefix or str(key)


def path_name(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path, simple=True, separator=".")


def form_of(obj: Any) -> Form | None:
    """The form of ``obj``, or None when it is no JAX model."""
    if "flax" in sys.modules:
        from flax import linen, nnx

        if isinstance(obj, nnx.Module):
            return Nnx()
        if isinstance(obj, linen.Module):
            return Linen()  # without its variables: ``require`` says what to write
        if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], linen.Module):
            return Linen() if isinstance(obj[1], Mapping) and "params" in obj[1] else None
    if isinstance(obj, tuple) and len(obj) == 2 and callable(obj[0]):
        leaves = jax.tree_util.tree_leaves(obj[1])
        if leaves and all(is_array(leaf) for leaf in leaves):
            return Function()
    return None


def require(obj: Any, source: str) -> Form:
    """The form of a model this adapter claimed, or a one-line error saying how to write it."""
    form = form_of(obj)
    if form is None:
        raise ModelFileError(
            f"The model in {source} is not a JAX model: give `model = (apply_fn, params)`, "
            "`model = (linen_module, variables)` or an NNX module."
        )
    if isinstance(form, Linen) and not isinstance(obj, tuple):
        raise ModelFileError(
            f"The Linen module in {source} comes without its variables. Write "
            "`model = (module, module.init(jax.random.key(0), x))`."
        )
    return form


KERNEL_LAYOUTS = {2: "in out", 3: "W I O", 4: "H W I O", 5: "D H W I O"}  # Flax: spatial axes, then in, out
FUNCTION_LAYOUTS = {1: "out", 2: "in out", 4: "O I H W"}  # x @ W, and jax.lax.conv's default OIHW


def layout(form: Form, name: str, ndim: int) -> str:
    """Flax's kernel and bias conventions; for pure functions, ``x @ W`` and ``lax.conv``'s default."""
    if not form.flax:
        return FUNCTION_LAYOUTS.get(ndim, "")
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "kernel":
        return KERNEL_LAYOUTS.get(ndim, "")
    return "out" if leaf == "bias" and ndim == 1 else ""
