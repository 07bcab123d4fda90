"""Which layer a wrong value is blamed on, where the layer that shows it did not make it.

Kept in one place because the plain comparison (its first backward divergence), the replay (its culprits) and the
gradient check (its verdicts) all apply them:

- A value recorded without an input gradient of its own (a tap, the output of a layer whose backward is not
  recorded) only receives its gradient: a wrong gradient arriving at it was made by the backward of the layer
  that consumes it, the next one in execution order.
"""

from __future__ import annotations

from layerdiff.results import LayerCheck


def gradient_maker(row: int, rows: int) -> int | None:
    """The row whose backward made the gradient arriving at the output of row ``row``, of ``rows`` in execution
    order: its consumer, the next row; None for the last, whose gradient comes from the loss or the upstream one.

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
