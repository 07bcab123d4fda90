"""A side's optimizer for training steps: the one its model file declares, stepped through its adapter, with its
state read and written by parameter; plain SGD when the file declares none. And a model's buffers (running
statistics, a carried hidden state), which a training step changes beside the weights.

This is the optional part of the adapter protocol, found with ``getattr`` so that an adapter without it still
loads (it then trains with plain SGD and has no buffers):

    def stepper(self, model, spec, training: Training) -> Stepper      # the file's optimizer, or its update()
    def buffers(self, model, spec) -> list[Buffer]
    def load_buffers(self, model, spec, values: dict[str, np.ndarray | None]) -> None   # None: not yet made

A ``Stepper``'s state is ``{parameter: {entry: array}}``, by its own side's parameter names, each array in that
parameter's layout (so that the weight mapping carries it to the other side), the entries named as PyTorch names
them (``ENTRIES``): ``exp_avg``, ``exp_avg_sq``, ``step``, ``momentum_buffer``. A step count kept once for all
parameters (optax's ``count``, a NumPy optimizer's ``t``) is given to each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from layerdiff.errors import ModelFileError

if TYPE_CHECKING:
    from layerdiff.runner import Side

State = dict[str, dict[str, np.ndarray]]

# Other names of an optimizer's state entries, by the name PyTorch gives each (after leading underscores go).
ENTRIES = {
    "exp_avg": ("m", "ms", "mt", "m_t", "mu", "first_moment", "moment1", "moment", "mean"),
    "exp_avg_sq": ("v", "vs", "vt", "v_t", "nu", "second_moment", "moment2"),
    "momentum_buffer": ("velocity", "velocities", "vel", "buf", "buffer", "acc", "accumulation", "trace"),
    "step": ("t", "steps", "iteration", "iterations", "timestep", "count", "n_iter", "num_steps", "iter"),
}
# Buffers by the name PyTorch gives each, and the other names hand-written layers give them.
BUFFERS = {
    "running_mean": ("moving_mean", "running_avg", "mean_running"),
    "running_var": ("moving_var", "moving_variance", "running_variance", "var_running"),
    "num_batches_tracked": (),
    "hidden": ("h", "h0", "h_prev", "prev_h", "hidden_state", "state", "carry", "c_prev", "cell"),
}
# Other names of an optimizer's settings, by the name PyTorch gives each: what hints quote.
SETTINGS = {
    "lr": ("learning_rate", "alpha", "eta"),
    "momentum": ("mu", "beta", "gamma"),
    "weight_decay": ("wd", "l2", "decay", "lambda_", "lambd"),
    "eps": ("epsilon",),
    "beta1": ("b1",),
    "beta2": ("b2",),
}


def entry_name(name: str, moments: bool = True) -> str:
    """The name PyTorch gives a state entry; ``v`` is Adam's second moment when the optimizer also keeps a first
    moment (``moments``), else a momentum's velocity.

    >>> entry_name("_m"), entry_name("v"), entry_name("v", moments=False), entry_name("cache")
    ('exp_avg', 'exp_avg_sq', 'momentum_buffer', 'cache')
    """
    key = name.lstrip("_").lower()
    if key in ("v", "vs") and not moments:
        return "momentum_buffer"
    return next((canonical for canonical, others in ENTRIES.items() if key == canonical or key in others), key)


def buffer_name(name: str) -> str | None:
    """The name PyTorch gives a buffer a layer keeps (``moving_var`` -> ``running_var``), or None for a name no
    buffer has.

    >>> buffer_name("bn2.moving_var"), buffer_name("x")
    ('running_var', None)
    """
    key = name.rpartition(".")[2].lstrip("_").lower()
    return next((canonical for canonical, others in BUFFERS.items() if key == canonical or key in others), None)


def setting_name(name: str) -> str:
    """The name PyTorch gives an optimizer setting (``learning_rate`` -> ``lr``), or the name itself."""
    key = name.lstrip("_").lower()
    return next((canonical for canonical, others in SETTINGS.items() if key == canonical or key in others), key)


@dataclass(frozen=True)
class Training:
    """What a model file declares for training, and the learning rate of plain SGD or of its ``update(model, lr)``."""

    optimizer: Any = None
    scheduler: Any = None
    opt_state: Any = None
    lr: float = 0.01


class Stepper(Protocol):
    """One side's optimizer."""

    name: str  # as the report says it: "torch.optim.Adam", "plain SGD"

    def settings(self) -> dict[str, Any]:
        """Its settings by PyTorch's names (``lr``, ``betas``, ``momentum``, ``weight_decay``…), those it has."""

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """One step from these gradients (this side's names and layouts), then the scheduler's, if any."""

    def state(self) -> State:
        """A copy of its state, ``{parameter: {entry: array}}``."""

    def load_state(self, state: State) -> None:
        """Overwrite the entries it keeps with these; an entry it does not keep is left out."""


@dataclass(frozen=True)
class Buffer:
    """A model's value that is neither a parameter nor a gradient but changes as it trains (a batch norm's running
    variance, a recurrent layer's carried state)."""

    name: str  # "bn2.running_var"
    layer: str  # "bn2"
    value: np.ndarray


class PlainSGD:
    """p <- p - lr * dL/dp through the adapter: what a side that declares no optimizer trains with."""

    name = "plain SGD"

    def __init__(self, side: Side, lr: float) -> None:
        self.side, self.lr = side, lr

    def settings(self) -> dict[str, Any]:
        return {"lr": self.lr}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        params = self.side.parameters()
        self.side.load({p.name: p.value - self.lr * grads[p.name] for p in params if p.name in grads})

    def state(self) -> State:
        return {}

    def load_state(self, state: State) -> None:
        pass


def stepper_for(side: Side, lr: float) -> Stepper:
    """The optimizer ``side``'s file declares (or its ``update(model, lr)``), made by its adapter; plain SGD at
    ``lr`` when it declares neither.

    Raises:
        ModelFileError: a scheduler without an optimizer, or an optimizer its adapter cannot step (or that is not
            over the model's parameters: the adapter's check).
    """
    model = side.model
    training = Training(model.optimizer, model.scheduler, model.opt_state, lr)
    if training.scheduler is not None and training.optimizer is None:
        raise ModelFileError(
            f"{side.source} declares a `scheduler` but no `optimizer` for it to schedule. Declare the optimizer too, "
            "or remove the scheduler."
        )
    if training.optimizer is None and "update" not in side.spec.glue:
        return PlainSGD(side, lr)
    make = getattr(side.adapter, "stepper", None)
    if make is None:
        raise ModelFileError(
            f"{side.source} declares its own optimizer, but the {side.adapter.name} adapter cannot step one. Remove it "
            "to train with plain SGD, or update the adapter."
        )
    stepper: Stepper = make(side.handle, side.spec, training)
    return stepper


def buffers(side: Side) -> dict[str, Buffer]:
    """The side's buffers by name, copied; none when its adapter finds none (or cannot look)."""
    find = getattr(side.adapter, "buffers", None)
    found: list[Buffer] = [] if find is None else find(side.handle, side.spec)
    return {b.name: Buffer(b.name, b.layer, np.array(b.value, copy=True)) for b in found}


def load_buffers(side: Side, values: dict[str, np.ndarray | None]) -> None:
    """Overwrite buffers by name (None: as before the model first made it)."""
    load = getattr(side.adapter, "load_buffers", None)
    if load is not None and values:
        load(side.handle, side.spec, values)


def describe(stepper: Stepper) -> str:
    """The optimizer and its settings, as the report says it: ``torch.optim.Adam (lr 0.001, betas (0.9, 0.999))``."""
    shown = {k: v for k, v in stepper.settings().items() if k in ("lr", "betas", "beta1", "beta2", "eps", "momentum", "weight_decay")}
    return stepper.name + (" (" + ", ".join(f"{k} {_short(v)}" for k, v in shown.items()) + ")" if shown else "")


def _short(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
