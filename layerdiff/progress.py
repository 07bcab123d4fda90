"""Progress: the long steps call ``progress(stage, done, total)``; the CLI draws a bar from it, the API passes none.

A stage is named by what it does to which file (``"capture a.py"``, ``"compare"``) and reported step by step, or
as one step with ``stage``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

Progress = Callable[[str, int, int], None]


@contextmanager
def stage(progress: Progress | None, name: str) -> Iterator[None]:
    """Report ``name`` as started, then as done when the block ends.

    >>> with stage(lambda *step: print(step), "capture a.py"):
    ...     pass
    ('capture a.py', 0, 1)
    ('capture a.py', 1, 1)
    """
    if progress is not None:
        progress(name, 0, 1)
    yield
    if progress is not None:
        progress(name, 1, 1)
