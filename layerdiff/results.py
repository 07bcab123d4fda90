"""What layerdiff finds, as data: the comparison of two sides, and the three checks of one network.

Nothing here computes beyond the small derived properties a reader asks of a result (``match``, ``worst``); the
reports (``report``, ``health_report``, ``html``, ``plots``) render these and compute nothing either.

One vocabulary of verdicts serves the comparison and the gradient check: a layer is a ``culprit`` (wrong given
correct inputs), ``inherited`` (wrong only because of what it received), ``differs`` (wrong, and no replay could
tell which), or ``ok``. A culprit is found in one ``Pass``: ``forward`` (its output), ``backward`` (its input
gradient), or ``param_grad`` (only a parameter gradient is wrong).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from layerdiff.records import RunInfo

Verdict = Literal["culprit", "inherited", "differs", "ok"]
Pass = Literal["forward", "backward", "param_grad"]
PASS_KINDS = {"forward": ("output",), "backward": ("grad_input", "grad_output")}


@dataclass
class TensorDiff:
    key: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    dtype_a: str
    dtype_b: str
    tol: float = 0.0
    max_abs: float = 0.0
    max_rel: float = 0.0
    rel_l2: float = 0.0
    mismatch_fraction: float = 0.0
    nonfinite_mismatch: int = 0
    ok: bool = True
    problem: str = ""  # "shape", "nonfinite", "stats" (figures from statistics) or "missing gradient"
    note: str = ""  # the problem said in a sentence, where the figures say nothing ("a.py gives no gradient for fc3.W")


@dataclass
class LayerDiff:
    layer_a: str
    layer_b: str
    kind_a: str
    kind_b: str
    tensors: list[TensorDiff] = field(default_factory=list)  # cumulative: the plain run
    param_grads: list[TensorDiff] = field(default_factory=list)  # key: "<a's parameter> ~ <b's parameter>"
    local: list[TensorDiff] = field(default_factory=list)  # the teacher-forced replay against the other side
    verdict: Verdict = "ok"
    # The replay's verdict per pass ("forward", "backward"), where its rules gave one: a layer that received a
    # different value than the other side's is no culprit, whatever its local error.
    judged: dict[str, Verdict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the replay could not tell about this layer, and why

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tensors + self.param_grads + self.local)

    def worst(self, what: str, local: bool = False) -> TensorDiff | None:
        """The tensor that differs most: ``"forward"`` (outputs), ``"backward"`` (gradients of the input and
        output) or ``"params"`` (parameter gradients); from the teacher-forced replay when ``local``.

        >>> layer = LayerDiff("fc", "fc", "Dense", "Linear", [TensorDiff("output", (2,), (2,), "f8", "f8", max_rel=3.0)])
        >>> layer.worst("forward").max_rel, layer.worst("backward")
        (3.0, None)
        """
        if what == "params":
            found = [t for t in self.local if " ~ " in t.key] if local else self.param_grads
        else:
            kinds = PASS_KINDS[what]
            found = [t for t in (self.local if local else self.tensors) if t.key.split(".")[0] in kinds]
        return max(found, key=lambda t: (not t.ok, t.max_rel)) if found else None

    def verdict_in(self, pass_: str) -> Verdict:
        """The verdict of one pass, ``"forward"`` or ``"backward"`` (parameter gradients included): a layer that is
        a culprit backward only has its forward values right."""
        if pass_ in self.judged:
            return self.judged[pass_]
        whats = ("forward",) if pass_ == "forward" else ("backward", "params")
        if any(t is not None and not t.ok for t in (self.worst(w, local=True) for w in whats)):
            return "culprit"
        if all(t is None or t.ok for t in (self.worst(w) for w in whats)):
            return "ok"
        return "differs" if self.verdict == "differs" else "inherited"


@dataclass
class Divergence:
    layer_a: str
    layer_b: str
    tensor: str
    max_abs: float
    max_rel: float
    tol: float
    note: str = ""
    problem: str = ""  # as the tensor's: with "shape" or "missing gradient" the note says it, the figures are none


@dataclass(frozen=True)
class Gap:
    """Code between two captured layers, ``after`` one and ``before`` the next (each as side A and side B name
    it), with the layers that one side records there and the other does not."""

    after: tuple[str, str]
    before: tuple[str, str]
    only_a: tuple[str, ...] = ()
    only_b: tuple[str, ...] = ()


@dataclass
class Zoom:
    """A module (``layer_a`` on side A, ``layer_b`` on B; "" the whole model) run operation by operation on both
    sides, on equal inputs: the first operation whose output differs (``op``, its index on side A, and ``name``; the
    operation that reads it, ``consumer``), or ``said``, why none is named."""

    layer_a: str
    layer_b: str
    op: int | None = None
    name: str = ""
    consumer: str = ""
    max_rel: float = 0.0
    tol: float = 0.0
    shape: tuple[int, ...] = ()
    ops: int = 0  # operations recorded on side A
    said: str = ""


@dataclass
class Culprit:
    """A layer wrong given correct inputs; or, with ``gap``, code between captured layers."""

    layer_a: str
    layer_b: str
    pass_: Pass
    tensor: str
    max_abs: float
    max_rel: float
    tol: float
    hint: str | None
    # Side A's value and side B's, as compared (B's from the replay): what pictures of the culprit are drawn from.
    values: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)
    gap: Gap | None = None
    note: str = ""  # what the figures do not say: whose contributions a gradient sums, what raised
    problem: str = ""  # as the tensor's (``TensorDiff.problem``): with "shape", "missing gradient" or "raised"
    # the note says it all and the figures are none


@dataclass
class Comparison:
    source_a: str
    source_b: str
    layers: list[LayerDiff]
    forward: Divergence | None
    backward: Divergence | None
    culprits: list[Culprit] | None  # None when no replay was possible (two dumps)
    nonfinite: dict[str, dict[str, str | None]]
    only_a: list[str]
    only_b: list[str]
    structure: list[str]
    info_a: RunInfo
    info_b: RunInfo
    loss_a: float | None
    loss_b: float | None
    fixed_tol: float | None
    precision: list[Precision] = field(default_factory=list)  # --dtype native: each side that computed below float64
    weights: WeightCheck | None = None  # --weights own: each side's own weights, compared before the run
    # Runs of layers aligned as one layer of the other side, by the names of their layers joined with "+".
    fused_a: list[str] = field(default_factory=list)
    fused_b: list[str] = field(default_factory=list)
    zooms: list[Zoom] = field(default_factory=list)  # modules run operation by operation: culprits' and those asked for

    @property
    def match(self) -> bool:
        plain = self.forward is None and self.backward is None and not self.culprits and all(l.ok for l in self.layers)
        return plain and all(p.ok for p in self.precision) and (self.weights is None or self.weights.ok)

    def first_culprit(self, pass_: str) -> Culprit | None:
        passes = ("forward",) if pass_ == "forward" else ("backward", "param_grad")
        return next((c for c in self.culprits or [] if c.pass_ in passes), None)


# --dtype native: a side that computed below float64 against its float64 twin (``precision.judge``).


@dataclass
class Rounding:
    """One tensor of one layer: how far the side's value lies from its twin's, as relative L2 errors."""

    key: str  # "output", "grad_input" (".1"... for more), or a parameter's name for its gradient
    lost: float  # against the twin forced with the side's own inputs: this layer's rounding alone
    explained: float  # what the side's precision explains for this tensor
    reduction: int  # the terms each entry sums, n: rounding of a sum grows with its square root
    cumulative: float | None = None  # against the twin's plain run: what has been lost by this layer
    excess: float | None = None  # the two twins' local error here: the difference precision does not explain
    nonfinite: int = 0  # entries NaN or infinite on one side only

    @property
    def ok(self) -> bool:
        return self.nonfinite == 0 and self.lost <= self.explained


@dataclass
class LayerRounding:
    layer: str
    kind: str
    tensors: list[Rounding]

    @property
    def worst(self) -> Rounding | None:  # a failing tensor first, then the one that loses the most
        return max(self.tensors, key=lambda t: (not t.ok, t.lost), default=None)


@dataclass
class Precision:
    """One side's rounding, layer by layer; ``ok`` when every layer loses no more than its precision explains."""

    side: str  # "a" or "b"
    source: str
    dtype: str  # what it computed in: "bfloat16", "float16", "float32"
    matmul: str  # what its float32 matrix products compute in when not float32 ("tf32"), else ""
    layers: list[LayerRounding]

    @property
    def ok(self) -> bool:
        return all(t.ok for layer in self.layers for t in layer.tensors)

    def most_lost(self, count: int = 3) -> list[LayerRounding]:  # the layers that round the most, worst first
        return sorted((l for l in self.layers if any(t.lost > 0 for t in l.tensors)), key=lambda l: -max(t.lost for t in l.tensors))[:count]


# --weights own: the weights each side brought, A's against B's (``weights.check``).
WeightVerdict = Literal["equal", "rounded", "transposed", "permuted", "gates reordered", "scaled", "different"]


@dataclass
class ParamCheck:
    """One parameter of A against the one of B the mapping pairs it with, moved between their layouts."""

    a: str
    b: str
    verdict: WeightVerdict
    detail: str  # "max rel 3.0e-08", "axes (1, 0)", "b's blocks are a's 0 2 1 3", "by 0.5"
    max_rel: float  # B's value against A's as the mapping moves it

    @property
    def ok(self) -> bool:
        return self.verdict in ("equal", "rounded")


@dataclass
class WeightCheck:
    source_a: str
    source_b: str
    params: list[ParamCheck]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.params)


# The checks of one network live in check_results; imported last, since they use Verdict from here.
from layerdiff.check_results import (  # noqa: E402
    Check as Check,
    Curve as Curve,
    Flag as Flag,
    GradCheck as GradCheck,
    Health as Health,
    LayerCheck as LayerCheck,
    LayerHealth as LayerHealth,
    NonFinite as NonFinite,
    Overfit as Overfit,
    ParamHealth as ParamHealth,
    Point as Point,
    Status as Status,
)
