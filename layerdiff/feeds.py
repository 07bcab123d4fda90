"""The feed both sides of a comparison run on: the inputs a file declares (or seeded ones of a shape it declares),
the targets, and the upstream gradient, seeded unless both sides have a loss; or the feed a dump was made with.
Made once, in PyTorch's axis order (``Side.run`` lays it out for a channels-last model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from layerdiff.adapter import Feed
from layerdiff.errors import ModelFileError
from layerdiff.layout import canonical, canonical_shape
from layerdiff.records import Trace

if TYPE_CHECKING:
    from layerdiff.runner import Side


def make_feed(sides: list[Side], seed: int) -> tuple[Feed, list[str]]:
    """Inputs, targets and upstream gradient for both sides, from whichever file declares them first."""
    notes = []
    declared = next((s for s in sides if s.model.inputs is not None), None)
    keywords: tuple[str, ...] = ()
    if declared is not None and declared.model.inputs is not None:
        inputs = [canonical(x, declared.layout) for x in declared.model.inputs]
        keywords = declared.model.input_names
        shown = ", ".join(f"{n} {tuple(x.shape)} {x.dtype}" for n, x in zip(keywords, inputs)) if keywords else _shapes(inputs)
        notes.append(f"inputs from {declared.source}: {shown}")
    else:
        shaped = next((s for s in sides if s.model.input_shapes is not None), None)
        if shaped is None:
            names = " nor ".join(s.source for s in sides)
            raise ModelFileError(
                f"Neither {names} declares its inputs. Add `input_shape = (batch, features)` (or `inputs = ...`) to one of them."
            )
        rng = np.random.default_rng(seed)
        inputs = [rng.standard_normal(canonical_shape(s, shaped.layout)) for s in shaped.model.input_shapes or []]
        notes.append(f"inputs: seeded normal {_shapes(inputs)} (seed {seed}, shape from {shaped.source})")
    with_loss = [s for s in sides if s.spec.loss is not None]
    if with_loss and len(with_loss) != len(sides):
        lacking = next(s for s in sides if s.spec.loss is None)
        raise ModelFileError(
            f"{with_loss[0].source} defines a loss but {lacking.source} does not. Define `loss` in {lacking.source} "
            f"too, or remove it from {with_loss[0].source} to compare with a seeded random upstream gradient."
        )
    targets = next((s.model.targets for s in sides if s.model.targets is not None), None)
    if with_loss:
        own = [s.source for s in sides if isinstance(s.spec.loss, str)]
        by = f" ({', '.join(own)}: the model's own, loss = \"model\")" if own else ""
        notes.append(f"upstream: each side's own loss{by}, targets {_shapes([targets]) if targets is not None else 'none'}")
    else:
        notes.append(f"upstream: seeded random gradient on the output (seed {seed}), loss = <output, r>")

    def upstream(index: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.random.default_rng([seed, 1, index]).standard_normal(shape)

    feed = Feed(inputs, targets, upstream, keywords)
    for side in sides:
        side.build(feed)
    return feed, notes


def feed_from(recorded: Trace) -> Feed:
    """The feed a dump was made with, so that a script can be compared against it."""

    def upstream(index: int, shape: tuple[int, ...]) -> np.ndarray:
        if index >= len(recorded.upstream) or recorded.upstream[index].shape != shape:
            have = [u.shape for u in recorded.upstream]
            raise ModelFileError(f"The model's output {index} has shape {shape}; the dump's upstream gradients have {have}.")
        return recorded.upstream[index]

    return Feed(recorded.inputs, recorded.targets, upstream, recorded.input_names)


def _shapes(arrays: Any) -> str:
    return ", ".join(str(tuple(np.shape(a))) for a in arrays)
