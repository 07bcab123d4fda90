"""Overfit a tiny batch: plain SGD for a bounded number of steps, and whether the loss goes toward zero.

A network that cannot drive the loss on two examples toward zero has a bug (or a learning rate far off); two
implementations that start from the same weights and inputs should trace the same curve, and the step where their
curves part says whether the forward (step 0) or the gradients (a later step) differ.

The step is the model file's own optimizer when it declares one (``optimizer``, stepped through its adapter:
``layerdiff.optimizer``), else p <- p - lr * dL/dp through the adapter, for every framework: what
``torch.optim.SGD(lr)`` does with momentum and weight decay off. A NumPy model file may give its own rule as
``update(model, lr)``.
"""

from __future__ import annotations

import math
import numpy as np

from layerdiff import optimizer, runner, sync
from layerdiff.adapter import Feed
from layerdiff.errors import ModelFileError
from layerdiff.modelfile import Model
from layerdiff.results import Curve, Overfit

# The verdict on a curve, from its last loss L against its first L0 (losses that are >= 0, as classification and
# regression losses are): toward zero when L <= ZERO_FRACTION * L0, decreasing when L <= DECREASING_FRACTION * L0.
ZERO_FRACTION = 0.01
DECREASING_FRACTION = 0.5
# Two curves part at the first step where |La - Lb| > PART_RTOL * max(|La|, |Lb|). float64 noise stays far below.
PART_RTOL = 1e-6


def overfit(
    models: list[Model], *, steps: int = 100, lr: float = 0.1, batch: int = 2, dtype: str = "float64", seed: int = 0,
    param_map: dict[str, str] | None = None,
) -> Overfit:
    """Train each model (one or two, the second starting from the first's weights) on the same tiny batch.

    Raises:
        ModelFileError: a model without a loss, a bad ``steps``/``lr``/``batch``, or randomness left on.
    """
    if steps < 1 or batch < 1 or not lr > 0:
        raise ModelFileError(f"overfit needs steps >= 1, batch >= 1 and lr > 0; got steps {steps}, batch {batch}, lr {lr}.")
    for m in models:
        if m.loss is None:
            raise ModelFileError(
                f"{m.source} defines no loss: overfitting needs one to drive toward zero. Add `loss` and `targets` to it."
            )
    sides = [runner.prepare(m, dtype) for m in models]
    feed, notes = runner.make_feed(sides, seed)
    feed = _first(feed, batch)
    if len(sides) == 2:
        src, links = runner.weight_links(sides[0], sides[1], param_map)
        sides[1].load(sync.carry(links, src))
        notes.append(f"weights: {len(links)} tensors copied from {sides[0].source}")
    curves = [_train(s, feed, steps, lr, dtype, seed) for s in sides]
    parted, gaps = None, []
    if len(curves) == 2:
        parted = _parted(curves[0].losses, curves[1].losses)
        gaps = [_gap(x, y) for x, y in zip(curves[0].losses, curves[1].losses)]
    return Overfit(curves, steps, lr, len(feed.inputs[0]) if feed.inputs else batch, parted, notes, gaps)


def _first(feed: Feed, batch: int) -> Feed:
    """The first ``batch`` examples of the inputs and targets."""
    targets = None if feed.targets is None or np.ndim(feed.targets) == 0 else feed.targets[:batch]
    return Feed([x[:batch] if np.ndim(x) else x for x in feed.inputs], targets, feed.upstream, feed.names)


def _train(side: runner.Side, feed: Feed, steps: int, lr: float, dtype: str, seed: int) -> Curve:
    stepper = optimizer.stepper_for(side, lr)
    trace = runner.capture(side, feed, dtype, seed)  # runs twice: randomness left on is refused here
    losses = [float(trace.loss if trace.loss is not None else math.nan)]
    for _ in range(steps):
        if not math.isfinite(losses[-1]):
            break
        stepper.step({p.name: p.grad for p in trace.params if p.grad is not None})
        trace = side.run(feed)
        losses.append(float(trace.loss if trace.loss is not None else math.nan))
    return Curve(side.source, losses, _verdict(losses), "sgd" if isinstance(stepper, optimizer.PlainSGD) else stepper.name)


def _verdict(losses: list[float]) -> str:
    first, last = losses[0], losses[-1]
    if not math.isfinite(last) or last > first:
        return "diverged"
    if last <= ZERO_FRACTION * first:
        return "toward zero"
    if last <= DECREASING_FRACTION * first:
        return "decreasing"
    return "stuck"


def _gap(a: float, b: float) -> float:
    """How far apart two losses are, relative to the larger."""
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def _parted(a: list[float], b: list[float]) -> int | None:
    for step, (x, y) in enumerate(zip(a, b)):
        if not (abs(x - y) <= PART_RTOL * max(abs(x), abs(y))):
            return step
    return None if len(a) == len(b) else min(len(a), len(b))
