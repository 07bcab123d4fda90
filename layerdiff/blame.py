"""Which layer a wrong value is blamed on, where the layer that shows it did not make it.

The replay (``isolate``) hands each aligned layer of one side the other side's values, so a layer's local error is
its own only when it received what the other side's layer received. These rules place each difference where it is
made; the plain comparison (its first backward divergence) and the gradient check apply the first one alone:

- A value recorded without an input gradient of its own (a tap) only receives its gradient: a wrong gradient
  arriving at it was made by the backward of the layer that consumes it: the one whose recorded input is that value
  in the replay (value flow), else the next one in execution order. A value read by several consumers whose
  contributions the recordings do not separate is said to be so, and blamed on none of them alone.
- Forward, a layer whose input in the replay differs from the other side's received it from code between captured
  layers (a functional activation, a layer of one side with no partner): that code is the culprit (a ``Gap``), not
  the layer. An input that differs only in the order of its axes is a layout change made there, no culprit.
- Backward, a layer whose output gradient could not be forced (the other side's has another shape) is not judged.
  A wrong gradient arriving at a layer's output, while the next layer's backward is right and no layer after it is
  a culprit (whose error may reach it through code no layer records, a residual stream), was made by the code
  between the two: a gap, backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from layerdiff.flow import Flow
from layerdiff.results import Culprit, Gap, LayerCheck, LayerDiff


def gradient_maker(row: int, rows: int) -> int | None:
    """The row whose backward made the gradient arriving at the output of row ``row``, of ``rows`` in execution
    order, where nothing says more: its consumer, the next row; None for the last, whose gradient comes from the loss
    or the upstream one.

    >>> gradient_maker(2, 5), gradient_maker(4, 5)
    (3, None)
    """
    return row + 1 if row + 1 < rows else None


def judge_gradients(layers: list[LayerCheck], unrecorded: str) -> None:
    """The gradient check's verdicts: a layer is a culprit when its own gradients are wrong while the one arriving
    at its output is right, inherited when what arrives is wrong already; ``unrecorded`` is the kind of a layer that
    owns parameters but records no values, whose arriving gradient is unknown."""
    arriving_anywhere = any(c.status == "wrong" for layer in layers for c in layer.checks if c.tensor.startswith("output"))
    for layer in layers:
        arriving = any(c.status == "wrong" for c in layer.checks if c.tensor.startswith("output"))
        own = any(c.status == "wrong" for c in layer.checks if not c.tensor.startswith("output"))
        if layer.kind == unrecorded:
            arriving = arriving_anywhere  # what arrives at an unrecorded layer is unknown: blame a recorded one first
        layer.verdict = "inherited" if arriving else "culprit" if own else "ok"
    if any(layer.verdict != "ok" for layer in layers) and not any(layer.verdict == "culprit" for layer in layers):
        # No layer makes the error given what it receives: the last one that receives it wrong records no input
        # gradient (a tap), so the error comes from the backward of the layer that made it (``blame``).
        recorded = [layer for layer in layers if layer.kind != unrecorded]
        last = max(i for i, layer in enumerate(recorded) if layer.verdict == "inherited")
        maker = gradient_maker(last, len(recorded))
        if maker is not None:
            recorded[maker].verdict = "culprit"
            recorded[maker].note = f"the gradient its backward sends to {recorded[last].name} is wrong"
        else:
            recorded[last].verdict = "culprit"
            recorded[last].note = "the gradient arriving at its output is wrong: the cause is in backward code after it that no layer records"


@dataclass
class Local:
    """What the replay says of one aligned row before any blame: the first wrong tensor of each kind, as a culprit
    of this row (``None`` where all agree)."""

    output: Culprit | None = None  # its output, computed from the input it received
    received: Culprit | None = None  # its input: the replay handed it something else than the other side's
    layout_only: bool = False  # ... the same values with the axes in another order
    grad_input: Culprit | None = None  # its input gradient, from the output gradient it was handed
    grad_output: Culprit | None = None  # the gradient arriving at its output: its consumers' backward
    params: list[Culprit] = field(default_factory=list)
    has_grad_input: bool = False  # both sides record its input gradient
    grad_forced: bool = True  # the replay could hand it the other side's output gradient
    output_forced: bool = True  # ... and the other side's output, to the layers after it
    unfinished: bool = False  # its backward never ran on one side: it, or a layer after it, raised
    raised: str = ""  # ... it raised itself: the exception, on one line


@dataclass
class Placed:
    """The culprits in pass order, each with the row it sorts at (a gap between rows n - 1 and n at n - 0.5)."""

    forward: list[tuple[float, Culprit]] = field(default_factory=list)
    backward: list[tuple[float, Culprit]] = field(default_factory=list)

    def culprits(self) -> list[Culprit]:
        forward = sorted(self.forward, key=lambda x: x[0])
        backward = sorted(self.backward, key=lambda x: (-x[0], x[1].pass_))
        return [c for _, c in forward + backward]


def place(facts: list[Local | None], layers: list[LayerDiff], flow: Flow) -> Placed:
    """The culprits of a replay, each where it is made; each layer's verdict per pass and notes set on ``layers``.

    Args:
        facts: per row, what the replay found (None: the row could not be replayed).
        layers: the rows' comparisons, in execution order.
        flow: how values flow between the rows in the replay.
    """
    placed = Placed()
    for n, f in enumerate(facts):
        if f is not None:
            _forward(n, f, facts, layers, flow.gap_before, placed)
    made_after = False  # a backward culprit after the row in execution order
    unforced_after = False  # a row after it that could not be handed the other side's gradient
    for n in range(len(facts) - 1, -1, -1):
        f = facts[n]
        if f is None:
            continue
        made_after = _backward(n, f, layers, placed) or made_after
        if f.grad_output is not None and not f.unfinished and f.grad_forced and unforced_after:
            layers[n].notes.append("the gradient arriving at its output differs: a layer after it could not be handed the other side's gradient")
        elif f.grad_output is not None and not f.unfinished and f.grad_forced:
            made_after = _arriving(n, f, facts, layers, flow, made_after, placed) or made_after
        unforced_after = unforced_after or not f.grad_forced
    return placed


def _forward(n: int, f: Local, facts: list[Local | None], layers: list[LayerDiff], gaps: Callable[[int], Gap], placed: Placed) -> None:
    layer = layers[n]
    before = facts[n - 1] if n > 0 else None
    if f.received is not None and f.layout_only:
        layer.notes.append("its input holds the other side's values with the axes in another order (code before it lays them out): no difference")
    elif f.received is not None and (n == 0 or (before is not None and before.output_forced)):
        _gap(placed.forward, n - 0.5, f.received, gaps(n))
        layer.judged["forward"] = "inherited"
        layer.notes.append("its input already differs in the replay: the cause is the code before it")
        return
    elif f.received is not None:
        layer.judged["forward"] = "inherited"
        layer.notes.append("its input differs in the replay, where the layer before it could not be forced: not judged")
        return
    if f.output is not None:
        placed.forward.append((n, f.output))
        layer.judged["forward"] = "culprit"


def _backward(n: int, f: Local, layers: list[LayerDiff], placed: Placed) -> bool:
    """Place row ``n``'s own backward culprits (its input gradient, its parameters', an exception); whether it has one."""
    layer = layers[n]
    if f.unfinished:
        layer.judged["backward"] = "culprit" if f.raised else "inherited"
        if f.raised:
            placed.backward.append((n, Culprit(layer.layer_a, layer.layer_b, "backward", "backward", 0.0, 0.0, 0.0, None, note=f.raised, problem="raised")))
        return bool(f.raised)
    if not f.grad_forced:
        layer.judged["backward"] = "inherited" if not layer.ok else "ok"
        layer.notes.append("the gradient arriving at its output could not be given to the replay (its shape differs): its backward is not judged")
        return False
    different_input = f.received is not None and not f.layout_only
    found = [] if different_input else list(f.params)
    if f.grad_input is not None and f.received is None:
        found.insert(0, f.grad_input)
    if different_input and (f.grad_input is not None or f.params):
        layer.notes.append("its gradients are computed from the different input it received: its backward is not judged")
    placed.backward += [(n, c) for c in found]
    layer.judged["backward"] = "culprit" if found else ("ok" if layer.ok else "inherited")
    return bool(found)


def _arriving(n: int, f: Local, facts: list[Local | None], layers: list[LayerDiff], flow: Flow, made_after: bool, placed: Placed) -> bool:
    """A wrong gradient arriving at row ``n``'s output, placed with the backward that made it: a consumer recorded
    without an input gradient of its own (a tap), even one that is a culprit already, or the code that consumes it;
    none where one of several consumers is a culprit already, where several share it unseparated, or where a culprit
    after it may reach it through code. Whether a culprit was placed."""
    c = f.grad_output
    assert c is not None
    readers = flow.consumers(n)
    if readers is None:  # no recording says who reads it: the next row, as the order of execution suggests
        maker = gradient_maker(n, len(facts))
        return maker is not None and not f.has_grad_input and _blame(maker, c, layers, placed)
    taps = [k for k in readers if not _records_grad_input(facts[k])]
    if len(taps) == 1 and len(readers) == 1:
        # Its one reader made it, a culprit already or not (for a parameter's gradient): its input gradient is
        # wrong too, as a layer recording its own would be named for both.
        return _blame(taps[0], c, layers, placed)
    if any(layers[k].judged.get("backward") == "culprit" for k in readers):
        return False
    if taps:
        names = ", ".join(layers[k].layer_a for k in readers)
        note = (f"{names} all read {c.layer_a}'s output, and one side records only the sum of their input gradients: "
                "which of them makes it wrong cannot be told")
        placed.backward.append((n, replace(c, layer_a=f"consumers of {c.layer_a}", layer_b=f"consumers of {c.layer_b}", tensor=f"grad_output of {c.layer_a}", note=note)))
        return True
    # Read by code alone: the code before the first later row whose input is made by code, not handed on.
    end = next((m for m in range(n + 1, len(facts)) if flow.made_by_code(m)), n + 1)
    gap = flow.gap_before(end) if end < len(facts) else None
    if gap is None or any(x.gap == gap for _, x in placed.backward):
        return False  # that code is a culprit already, for another value it reads
    if made_after:
        layers[n].notes.append("the gradient arriving at its output differs: a culprit after it can reach it through code no layer records (a residual stream)")
        return False
    return _gap(placed.backward, end - 0.5, replace(c, tensor=f"grad_output of {c.layer_a}"), gap)


def made_by(n: int, rows: int, flow: Flow) -> int | list[int] | Gap | None:
    """What made the gradient arriving at row ``n``'s output, by the rule for a value without an input gradient of
    its own: the row that reads it (several: all of them), the code that reads it when no row does, the next row
    where no recording says; None for the last row."""
    readers = flow.consumers(n)
    if readers is None:
        return gradient_maker(n, rows)
    if readers:
        return readers[0] if len(readers) == 1 else readers
    end = next((m for m in range(n + 1, rows) if flow.made_by_code(m)), None)
    return None if end is None else flow.gap_before(end)


def gap_name(gap: Gap) -> tuple[str, str]:
    """A gap as each side names it."""
    return _name(gap, 0), _name(gap, 1)


def _records_grad_input(f: Local | None) -> bool:
    return f is not None and f.has_grad_input


def _blame(maker: int, c: Culprit, layers: list[LayerDiff], placed: Placed) -> bool:
    made = layers[maker]
    made.judged["backward"] = "culprit"
    placed.backward.append((maker, replace(c, layer_a=made.layer_a, layer_b=made.layer_b, tensor=f"{c.tensor} of {c.layer_a}")))
    return True


def _gap(found: list[tuple[float, Culprit]], at: float, c: Culprit, gap: Gap) -> bool:
    """A culprit in the code ``gap``, once per pass: several values read by the same code blame it once."""
    if any(x.gap == gap for _, x in found):
        return False
    found.append((at, replace(c, layer_a=_name(gap, 0), layer_b=_name(gap, 1), gap=gap)))
    return True


def _name(gap: Gap, side: int) -> str:
    """A gap as one side names it: the module whose own code it is, else "between X and Y"."""
    first = (gap.only_a, gap.only_b)[side]
    after, before = gap.after[side], gap.before[side]
    if gap.after[0] == gap.after[1] and gap.before[0] == gap.before[1]:
        first = first or (gap.only_b, gap.only_a)[side]  # the same names: the other side's layers say where it is
    parent = _enclosing(after, first[0] if first else before)
    return parent or f"between {after} and {before}"


def _enclosing(x: str, y: str) -> str:
    """The innermost module path enclosing both ``x`` and ``y``, when it holds named children (a ModuleList's
    numbered items are chained by their parent's caller, which has no code between them of its own)."""
    px, py = x.split("."), y.split(".")
    k = 0
    while k < min(len(px), len(py)) - 1 and px[k] == py[k]:
        k += 1
    if k == 0 or (px[k].isdigit() and py[k].isdigit()):
        return ""
    return ".".join(px[:k])
