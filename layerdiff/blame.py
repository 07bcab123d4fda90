"""Which layer a wrong value is blamed on, where the layer that shows it did not make it.

One rule today, kept in one place because the plain comparison (its first backward divergence), the replay (its
culprits) and the gradient check (its verdicts) all apply it:

- A value recorded without an input gradient of its own (a tap, the output of a layer whose backward is not
  recorded) only receives its gradient: a wrong gradient arriving at it was made by the backward of the layer
  that consumes it, the next one in execution order.
"""

from __future__ import annotations


def gradient_maker(row: int, rows: int) -> int | None:
    """The row whose backward made the gradient arriving at the output of row ``row``, of ``rows`` in execution
    order: its consumer, the next row; None for the last, whose gradient comes from the loss or the upstream one.

    >>> gradient_maker(2, 5), gradient_maker(4, 5)
    (3, None)
    """
    return row + 1 if row + 1 < rows else None
