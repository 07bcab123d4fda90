"""Loading a model file: run the user's script and pick out the model and what it declares beside it. Nothing is
run through an adapter here: ``runner.prepare`` does that.

A model file defines, at module level:
    model         the network (found automatically when it is the only one)
    loss          optional; without it the upstream gradient is a seeded random array
    inputs        optional array, list of arrays, or dict of arrays by keyword (``model(**inputs)``); else
                  ``input_shape`` gives seeded inputs. Integer and boolean inputs are fed as they are
    input_shape   tuple (or list of tuples)
    targets       optional, for the loss
    param_map     optional {this file's parameter name: the other file's parameter name}; a key ``re:PATTERN``
                  maps every name it matches (``\1`` in the value), ``prefix.*`` a whole subtree
    layer_map     optional, the same for layers
    ignore        optional glob or list of globs: layers this side has and the other has not (a dropout)
    output        optional: the part of a structured output to compare (``"logits"``, or an index)
    gates         optional {layer: gate order}, for recurrent weights kept per gate or packed: "i f g o"
    update_in_backward
                  optional: the learning-rate argument of a ``backward(dout, learning_rate)`` that updates the
                  weights itself
    layouts       optional {parameter name: axis names, e.g. "out in"}, for hand-written parameters
    activation_layout
                  optional axis names of the inputs and of every activation of as many dimensions, when not
                  PyTorch's channels-first: "N H W C" (Flax models default to it)
    params_of, grads_of, input_grad_of
                  optional glue for hand-written layers of unusual shape (see the README)
    update        optional ``update(model, lr)``: the network's own SGD step, for ``overfit`` and ``run --steps``
    optimizer, scheduler, opt_state
                  optional: the side's own optimizer for training steps (``torch.optim.Adam(model.parameters())``,
                  an optax transformation and its ``opt_state``, a NumPy object with ``step()``) and a learning-rate
                  scheduler, stepped after each optimizer step (``layerdiff.optimizer``)
"""

from __future__ import annotations

import os
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from layerdiff import declarations as forms
from layerdiff import declared
from layerdiff.adapter import Adapter, Spec, adapter_for, available
from layerdiff.errors import ModelFileError, raised_in

DECLARED = (
    "loss", "inputs", "input_shape", "targets", "param_map", "layouts", "activation_layout",
    "layer_map", "ignore", "output", "gates", "update_in_backward", "optimizer", "scheduler", "opt_state",
)
GLUE = ("params_of", "grads_of", "input_grad_of", "update")
EXTRAS = {"torch": "torch", "jax": "jax", "jaxlib": "jax", "flax": "jax"}  # a framework's module -> its extra


@dataclass
class Model:
    """A network, the adapter that claims it, and what its file declared."""

    obj: Any
    adapter: Adapter
    spec: Spec
    path: Path | None = None
    inputs: list[np.ndarray] | None = None
    input_shapes: list[tuple[int, ...]] | None = None
    targets: np.ndarray | None = None
    param_map: dict[str, str] = field(default_factory=dict)
    activation_layout: str | None = None  # None: not declared, the adapter's convention holds
    optimizer: Any = None  # the file's own, for training steps; None: plain SGD (``layerdiff.optimizer``)
    scheduler: Any = None
    opt_state: Any = None  # an optax transformation's state, when the file made it
    input_names: tuple[str, ...] = ()  # the keywords of dict inputs, in the file's order
    layer_map: dict[str, str] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()  # globs of layers left out of the alignment

    @property
    def source(self) -> str:
        return self.spec.source

    @property
    def loss(self) -> Any:
        return self.spec.loss


def from_object(
    obj: Any,
    *,
    source: str = "<model>",
    loss: Any = None,
    inputs: Any = None,
    input_shape: Any = None,
    targets: Any = None,
    param_map: dict[str, str] | None = None,
    layouts: dict[str, str] | None = None,
    glue: dict[str, Callable[..., Any]] | None = None,
    path: Path | None = None,
    activation_layout: str | None = None,
    optimizer: Any = None,
    scheduler: Any = None,
    opt_state: Any = None,
    layer_map: dict[str, str] | None = None,
    ignore: Any = None,
    output: Any = None,
    gates: dict[str, str] | None = None,
    update_in_backward: Any = None,
) -> Model:
    """Wrap a live network object (the Python API's entry; model files come through ``load``)."""
    adapter = adapter_for(obj)
    if adapter is None:
        extra = EXTRAS.get(_type_name(obj).split(".")[0])
        fix = (
            f"Install with: pip install 'layerdiff[{extra}]'"
            if extra is not None and extra not in available()
            else "Give a torch.nn.Module, a NumPy network with forward/backward, a JAX (apply_fn, params) pair or a Flax module"
        )
        raise ModelFileError(f"No adapter handles {_type_name(obj)} from {source}. Installed: {', '.join(available())}. {fix}.")
    names: tuple[str, ...] = ()
    arrays = None
    if inputs is not None:
        names, arrays = forms.inputs(inputs, source)
    spec = Spec(
        source, forms.loss(loss, source), declared.mapping(layouts, "layouts", source), dict(glue or {}), forms.output(output, source),
        forms.gates(gates, source), forms.update_in_backward(update_in_backward, source),
    )
    return Model(
        obj=obj,
        adapter=adapter,
        spec=spec,
        path=path,
        inputs=None if arrays is None else declared.arrays(arrays, source),
        input_shapes=None if input_shape is None else declared.shapes(input_shape, source),
        targets=None if targets is None else declared.targets(targets, source),
        param_map=declared.mapping(param_map, "param_map", source),
        activation_layout=None if activation_layout is None else _layout(activation_layout, source),
        input_names=names,
        layer_map=declared.mapping(layer_map, "layer_map", source),
        ignore=forms.globs(ignore, source),
        optimizer=optimizer,
        scheduler=scheduler,
        opt_state=opt_state,
    )


def load(path: str | os.PathLike[str]) -> Model:
    """Run a model file and return its model.

    Raises:
        ModelFileError: the file is missing, raises, or defines no model (or several).
    """
    path = Path(path)
    source = path.name
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file. Give the path of a Python file that builds your network.")
    namespace = _execute(path)
    obj = _find_model(namespace, source)
    declared = {k: namespace[k] for k in DECLARED if k in namespace}
    glue = {k: namespace[k] for k in GLUE if callable(namespace.get(k))}
    return from_object(obj, source=source, path=path.resolve(), glue=glue, **declared)


def _execute(path: Path) -> dict[str, Any]:
    """Run the script as ``python path`` would (its folder first on sys.path), isolated from the other side."""
    folder = str(path.resolve().parent)
    # A module of the same name imported from elsewhere (another fixture's lstm_numpy.py) must not stand in for
    # this folder's: set aside while the file runs, put back after.
    shadowed = {
        name: sys.modules.pop(name)
        for name in [n for n, m in sys.modules.items() if "." not in n and os.path.isfile(os.path.join(folder, n + ".py"))]
        if getattr(sys.modules[name], "__file__", None)
        and os.path.dirname(os.path.abspath(sys.modules[name].__file__ or "")) != folder
    }
    before = set(sys.modules)
    sys.path.insert(0, folder)
    try:
        return runpy.run_path(str(path), run_name="__layerdiff_model__")
    except SystemExit as exc:
        raise ModelFileError(
            f"{path.name} called exit({exc.code}) while loading. Move the script part under "
            "`if __name__ == '__main__':`."
        ) from None
    except Exception as exc:
        raise raised_in(path.name, exc, "while loading") from None
    finally:
        sys.path.remove(folder)
        # Helper modules of this file (a.py's `layers.py`) must not stand in for the other file's namesakes.
        for name in set(sys.modules) - before:
            module_file = getattr(sys.modules[name], "__file__", None) or ""
            if module_file.startswith(folder + os.sep):
                del sys.modules[name]
        sys.modules.update(shadowed)


def _find_model(namespace: dict[str, Any], source: str) -> Any:
    if "model" in namespace:
        return namespace["model"]
    skip = set(DECLARED) | set(GLUE)
    found = {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in skip
        and not isinstance(value, type)
        and not callable_only(value)
        and adapter_for(value) is not None
    }
    if len(found) > 1:
        with_params = {k: v for k, v in found.items() if _has_parameters(v)}
        if len(with_params) == 1:
            found = with_params
    if len(found) == 1:
        return next(iter(found.values()))
    if found:
        raise ModelFileError(
            f"{source} defines several models: {', '.join(found)}. Name the one to compare `model`."
        )
    raise ModelFileError(
        f"{source} defines no model: expected a module-level torch.nn.Module, a NumPy network with "
        "forward/backward (or a list of such layers), a Flax NNX module, or a variable named `model` (a JAX "
        "`(apply_fn, params)` pair, a Linen `(module, variables)` pair)."
    )


def callable_only(value: Any) -> bool:
    """Plain functions and modules are never models."""
    import types

    return isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.ModuleType))


def _has_parameters(obj: Any) -> bool:
    adapter = adapter_for(obj)
    if adapter is None:
        return False
    spec = Spec("")
    try:
        return bool(adapter.parameters(adapter.prepare(obj, spec, "native").model, spec))
    except Exception:
        return False


def _layout(value: Any, source: str) -> str:
    axes = value.split() if isinstance(value, str) else []
    if not isinstance(value, str) or len(set(axes)) != len(axes) or (axes and not {"N", "C"} <= set(axes)):
        raise ModelFileError(
            f"`activation_layout` in {source} must name the axes of its inputs, such as \"N H W C\" for channels-last "
            f"images; got {value!r}."
        )
    return " ".join(axes)


def _type_name(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"
