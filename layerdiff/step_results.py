"""What training steps find, as data (``steps.train``): each step of both sides compared, and the K steps together.

Data only, as ``results`` is: ``steps_report``, ``html`` and ``plots`` render these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from layerdiff.results import Comparison, TensorDiff

StepPart = Literal["optimizer", "buffer"]
Mode = Literal["re-synced", "free-running"]


@dataclass
class StepCulprit:
    """A step's culprit that is no layer: the optimizer's update of a parameter, given the same gradients and state
    on both sides; or a buffer's update (a running variance), given the same inputs."""

    step: int
    part: StepPart
    name_a: str  # the parameter, or the buffer
    name_b: str
    tensor: str  # "update", for the optimizer; the buffer's own name ("running_var") for a buffer
    max_abs: float
    max_rel: float
    tol: float
    hint: str | None
    state: str = ""  # the optimizer's state entries of that parameter: which differ, which agree
    others: list[str] = field(default_factory=list)  # the other parameters (or buffers) that differ at this step


@dataclass
class StepDiff:
    """One training step of both sides compared: the iteration's layers, then what the step changed."""

    step: int  # from 1
    loss_a: float | None
    loss_b: float | None
    layers_match: bool
    forward: float  # the largest max rel of the layers' outputs, of their gradients, of the parameter gradients
    backward: float
    params: float
    updates: list[TensorDiff]  # key "a's parameter ~ b's"; of a middle step, the worst and those that differ
    state: list[TensorDiff]  # key "a's parameter ~ b's: entry"
    buffers: list[TensorDiff]  # key "a's buffer ~ b's"
    culprits: list[StepCulprit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    comparison: Comparison | None = None  # the layers in full: kept for the step where they part, and the last
    weights: float = 0.0  # free-running: how far apart the weights the step started from are (max rel)
    # Free-running: the step started from weights apart by more than rounding, and every difference is still small
    # enough (under ``steps.DRIFT``) for an optimizer amplifying rounding to explain (it is not a parting);
    # or the weights are apart by more than that (a parting of the previous step's updates).
    drift: bool = False
    weights_apart: bool = False

    @property
    def parted(self) -> bool:
        return not self.drift and (not self.layers_match or bool(self.culprits) or self.weights_apart)

    def worst(self, what: str) -> float:
        """The largest max rel of ``"updates"``, ``"state"`` or ``"buffers"`` (0 when there are none)."""
        found: list[TensorDiff] = getattr(self, what)
        return max((t.max_rel for t in found), default=0.0)


@dataclass
class Training:
    """K training steps of two sides compared: re-synced (side B given A's weights, optimizer state and buffers
    before each step) or free-running (each on its own)."""

    source_a: str
    source_b: str
    mode: Mode
    requested: int
    steps: list[StepDiff]
    optimizer_a: str
    optimizer_b: str
    notes: list[str] = field(default_factory=list)

    @property
    def parted(self) -> int | None:
        """The first step where the two sides part."""
        return next((s.step for s in self.steps if s.parted), None)

    @property
    def match(self) -> bool:
        return self.parted is None
