"""What the three checks of one network find, as data: its health (``health.inspect``), a gradient check
(``gradcheck``) and an overfit run (``overfit``); ``results`` hands them out beside the comparison's results, in one
vocabulary of verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


from layerdiff.results import Verdict


# One network's health, from one recording (``health.inspect``).


@dataclass
class Flag:
    """One problem: ``kind`` is one of slow, unstable, update, vanishing, exploding, nonfinite, saturated, dead."""

    kind: str
    where: str
    message: str


@dataclass
class ParamHealth:
    name: str
    layer: str
    shape: tuple[int, ...]
    weight_norm: float
    grad_norm: float
    ratio: float | None  # ‖grad‖/‖w‖; None when ‖w‖ = 0 (a zero-initialized bias) or nothing is finite
    update: float | None  # lr·ratio, when a learning rate is given
    bias: bool  # biases start at zero and their ratio says little: shown, never flagged


@dataclass
class LayerHealth:
    index: int
    name: str
    kind: str
    activation: str  # relu, sigmoid, tanh or ""
    grad_norm: float | None  # of the gradient arriving at the layer's output
    grad_rms: float | None
    zero_fraction: float | None  # exact zeros in that gradient
    saturated: float | None = None  # sigmoid/tanh
    dead: float | None = None  # relu: fraction of units zero over the whole batch
    inactive: float | None = None  # relu: mean fraction of zero outputs
    samples: int = 0  # relu: values each unit took (examples, times positions for a channel)


@dataclass
class NonFinite:
    where: str  # "fc2 output", "param fc2.W grad"
    nan: int
    posinf: int
    neginf: int


@dataclass
class Health:
    """What ``inspect`` found; ``flags`` is empty for a healthy network."""

    source: str
    params: list[ParamHealth]
    layers: list[LayerHealth]
    nonfinite: list[NonFinite]
    forward_origin: str | None  # first layer with finite inputs and a non-finite output ("inputs": the feed)
    backward_origin: str | None  # first layer, from the loss, with a finite output gradient and a non-finite one out
    depth_ratio: float | None  # grad RMS at the first layer / at the last
    depth_span: tuple[str, str] | None
    lr: float | None
    flags: list[Flag] = field(default_factory=list)
    # Without a loss the gradients answer a seeded random upstream gradient, whose size is arbitrary: their
    # ratios to the weights say nothing about learning, so they are shown but not flagged.
    random_upstream: bool = False

    @property
    def healthy(self) -> bool:
        return not self.flags


# The finite-difference gradient check (``gradcheck.gradcheck``).

Status = Literal["good", "acceptable", "wrong", "kink"]  # of one checked coordinate


@dataclass
class Point:
    """One checked coordinate."""

    index: tuple[int, ...]
    analytic: float
    numeric: float
    rel: float  # |a - n| / max(|a|, |n|)
    excess: float  # the same after the estimate's own uncertainty is taken off: what the status is judged on
    noise: float  # that uncertainty, absolute
    step: float
    status: Status
    kink_at: str = ""  # the first layer whose output bent, for a kink


@dataclass
class Check:
    """One tensor's gradient checked: a parameter, or a layer's input or output."""

    layer: str
    tensor: str  # the parameter's name, or "input", "output" (".1"… for more)
    shape: tuple[int, ...]
    points: list[Point]
    shown: bool = True  # an output check repeating the next layer's input check only serves the verdict

    @property
    def status(self) -> Status:
        found = {p.status for p in self.points}
        order: tuple[Status, ...] = ("wrong", "acceptable", "good")
        return next((s for s in order if s in found), "kink" if found else "good")

    @property
    def kinks(self) -> int:
        return sum(p.status == "kink" for p in self.points)

    @property
    def worst(self) -> Point | None:
        """The point of worst status; among equals, of largest error where the gradient stands above the noise."""
        severity = {"wrong": 3, "acceptable": 2, "good": 1, "kink": 0}
        return max(
            self.points,
            key=lambda p: (severity[p.status], p.excess, max(abs(p.analytic), abs(p.numeric)) > p.noise, p.rel),
            default=None,
        )


@dataclass
class LayerCheck:
    name: str
    kind: str
    verdict: Verdict
    checks: list[Check]
    note: str = ""


@dataclass
class GradCheck:
    """The result: ``passed`` is False when some layer's gradient is wrong; ``culprits`` names those layers."""

    source: str
    layers: list[LayerCheck]
    evaluations: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.culprits

    @property
    def culprits(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.verdict == "culprit"]

    @property
    def points(self) -> int:
        return sum(len(c.points) for layer in self.layers for c in layer.checks)

    @property
    def kinks(self) -> int:
        return sum(c.kinks for layer in self.layers for c in layer.checks)


# Overfitting a tiny batch (``overfit.overfit``).


@dataclass
class Curve:
    source: str
    losses: list[float]
    verdict: str  # "toward zero", "decreasing", "stuck", "diverged"
    update: str  # "sgd", "the file's update()", or the file's optimizer ("torch.optim.Adam")


@dataclass
class Overfit:
    curves: list[Curve]
    steps: int
    lr: float
    batch: int
    parted: int | None  # two files: the first step where their losses differ
    notes: list[str] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)  # two files: |La - Lb| / max(|La|, |Lb|) per step

    @property
    def ok(self) -> bool:
        return all(c.verdict == "toward zero" for c in self.curves) and self.parted is None
