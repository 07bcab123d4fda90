"""Training a JAX model with the optax transformation its file declares (``optimizer = optax.adam(1e-3)``, and
``opt_state`` when the file made it; else its ``init`` on the model's parameters), the gradients given by name.

optax keeps its state as named tuples of trees shaped like the parameters (``ScaleByAdamState(count, mu, nu)``,
``TraceState(trace)``): an entry is the field above a parameter's path, PyTorch's name given to it (``mu`` is
``exp_avg``); a field with no parameter below it (``count``) is one value for all. The step runs with x64 enabled
for a float64 model, as the capture does, and the parameters stay NumPy arrays between runs.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import jax
import numpy as np

from layerdiff.adapter import Spec
from layerdiff.errors import ModelFileError, raised_in
from layerdiff.optimizer import State, Training, entry_name

from layerdiff.adapters.jax.capture import Held
from layerdiff.adapters.jax.forms import map_named, path_name


def _place(path: tuple[Any, ...]) -> tuple[str, str | None]:
    """(entry, parameter) of a state leaf: the last named-tuple field on its path, and the path below it."""
    fields = [i for i, key in enumerate(path) if isinstance(key, jax.tree_util.GetAttrKey)]
    if not fields:
        return path_name(path), None
    below = path[fields[-1] + 1 :]
    return entry_name(path[fields[-1]].name), (path_name(below) if below else None)


def _is_state(x: Any) -> bool:
    """An optax state: a named tuple (``ScaleByAdamState``) other than the empty one."""
    return isinstance(x, tuple) and hasattr(x, "_fields") and type(x).__name__ != "EmptyState"


class OptaxStepper:
    """An optax transformation and its state, over one model's ``params``."""

    def __init__(self, held: Held, spec: Spec, training: Training) -> None:
        self.held, self.source = held, spec.source
        self.tx = training.optimizer
        if not (callable(getattr(self.tx, "init", None)) and callable(getattr(self.tx, "update", None))):
            raise ModelFileError(
                f"`optimizer` in {spec.source} is a {type(self.tx).__name__}, not an optax GradientTransformation. "
                "Declare one, e.g. `optimizer = optax.adam(1e-3)`."
            )
        if training.scheduler is not None:
            raise ModelFileError(
                f"{spec.source} declares a `scheduler`: an optax schedule goes inside the transformation, e.g. "
                "`optax.adam(optax.exponential_decay(1e-3, 1, 0.9))`. Remove the scheduler."
            )
        with self._precision():
            params = self._params()
            try:
                state = training.opt_state if training.opt_state is not None else self.tx.init(params)
            except Exception as exc:
                raise raised_in(spec.source, exc, "in its optimizer's init") from None
            self.opt_state = self._cast(state, params)
        kinds = [type(x).__name__ for x in jax.tree_util.tree_leaves(self.opt_state, is_leaf=_is_state) if _is_state(x)]
        self.name = f"optax ({', '.join(dict.fromkeys(kinds)) or 'no state'})"
        own = set(self._names())
        strays = {p for _, p in (_place(path) for path, _ in jax.tree_util.tree_flatten_with_path(self.opt_state)[0])}
        if strays - own - {None}:
            raise ModelFileError(
                f"The optimizer state of {spec.source} is not over the model's parameters: it holds "
                f"{sorted(strays - own - {None})[0]!r}, which the model has not. Make it with `optimizer.init(params)` "
                "from the model's own parameters."
            )

    def _params(self) -> Any:
        return self.held.form.variables(self.held.obj)["params"]

    def _names(self) -> list[str]:
        return [path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(self._params())[0]]

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        x64 = any(np.asarray(leaf).dtype == np.float64 for leaf in jax.tree_util.tree_leaves(self._params()))
        with contextlib.ExitStack() as stack:
            if x64:
                stack.enter_context(jax.enable_x64(True))
            stack.enter_context(jax.default_matmul_precision("highest"))
            yield

    @staticmethod
    def _cast(state: Any, params: Any) -> Any:
        """The state as NumPy arrays, floating ones in the parameters' dtype (a file's own state is float32)."""
        dtype = next((np.asarray(p).dtype for p in jax.tree_util.tree_leaves(params)), np.float64)

        def cast(leaf: Any) -> Any:
            value = np.asarray(leaf)
            return value.astype(dtype) if np.issubdtype(value.dtype, np.floating) else value

        return jax.tree_util.tree_map(cast, state)

    def settings(self) -> dict[str, Any]:
        return {}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        import optax

        variables = self.held.form.variables(self.held.obj)
        params = variables["params"]

        def given(name: str, leaf: Any) -> Any:
            return np.asarray(grads[name], dtype=np.asarray(leaf).dtype) if name in grads else np.zeros_like(leaf)

        with self._precision():
            try:
                updates, state = self.tx.update(map_named(given, params), self.opt_state, params)
                moved = jax.tree_util.tree_map(np.asarray, optax.apply_updates(params, updates))
            except Exception as exc:
                raise raised_in(self.source, exc, "in its optimizer's update") from None
            self.opt_state = self._cast(state, params)
        self.held.obj = self.held.form.with_variables(self.held.obj, {**variables, "params": moved})

    def state(self) -> State:
        found: State = {}
        names = self._names()
        for path, leaf in jax.tree_util.tree_flatten_with_path(self.opt_state)[0]:
            entry, param = _place(path)
            for name in [param] if param is not None else names:
                found.setdefault(name, {}).setdefault(entry, np.array(leaf, copy=True))
        return found

    def load_state(self, state: State) -> None:
        def load(path: tuple[Any, ...], leaf: Any) -> Any:
            entry, param = _place(path)
            given = [s[entry] for p, s in state.items() if entry in s and (param is None or p == param)]
            return np.asarray(given[0], dtype=np.asarray(leaf).dtype).reshape(np.shape(leaf)) if given else leaf

        self.opt_state = jax.tree_util.tree_map_with_path(load, self.opt_state)


class Stepping:
    """The optional training part of the adapter protocol (``layerdiff.optimizer``); a JAX model has no buffers
    that a step changes here (Linen's ``batch_stats`` are not run mutable)."""

    def stepper(self, model: Any, spec: Spec, training: Training) -> OptaxStepper:
        if training.optimizer is None:
            raise ModelFileError(
                f"{spec.source} defines update(model, lr), which a JAX model's immutable arrays cannot take. Declare "
                "an optax transformation instead, e.g. `optimizer = optax.sgd(0.01)`."
            )
        return OptaxStepper(model, spec, training)
