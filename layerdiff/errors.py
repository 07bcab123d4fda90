"""The errors layerdiff raises when it cannot compare.

    LayerdiffError              anything the user can fix; the CLI prints it on one line, exit 2
    ├── ModelFileError          a model file is missing, defines no model, or raised
    ├── AlignmentError          layers, shapes or parameters of the two sides cannot be matched
    ├── DumpError               a file is not a layerdiff dump, is damaged, reaches outside itself, has another
    │                           schema, would be overwritten, or does not fit on the disk
    ├── ReportError             an HTML report or plot cannot be written, or matplotlib is missing
    ├── AdapterError            an adapter did not do what the protocol asks (a replay it did not force)
    └── OptionError             an option's value is out of its range (a tolerance of NaN, a negative seed)

A divergence between two networks is a result, never an exception.
"""

from __future__ import annotations

import contextlib
import contextvars
import traceback
from typing import Iterator


class LayerdiffError(Exception):
    """A problem with the user's input: printed as one line, exit code 2.

    ``details`` is extra text shown above that line (the user's own traceback).
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class ModelFileError(LayerdiffError):
    pass


class AlignmentError(LayerdiffError):
    pass


class DumpError(LayerdiffError):
    pass


class ReportError(LayerdiffError):
    pass


class AdapterError(LayerdiffError):
    pass


class OptionError(LayerdiffError):
    pass


def _user_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    adapters = os.path.join(os.path.dirname(here), "adapters")
    return [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith((here, adapters)) and "runpy" not in os.path.basename(f.filename)
    ]


def user_traceback(exc: BaseException) -> str:
    """The traceback of an exception raised in the user's code, without layerdiff's or runpy's frames."""
    frames = _user_frames(exc)
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip("\n")


def raised_line(exc: BaseException) -> str:
    """An exception of the user's code on one line, with where it was raised: "ValueError: ... (pool.py, line 12)"."""
    import os

    what = f"{type(exc).__name__}: {str(exc).strip()}" if str(exc).strip() else type(exc).__name__
    frames = _user_frames(exc)
    return what + (f" ({os.path.basename(frames[-1].filename)}, line {frames[-1].lineno})" if frames else "")


def out_of_memory() -> str:
    """What to do when the machine's memory runs out: record less, or one side per process."""
    return (
        f"(MemoryError): layerdiff holds both sides with every recorded value. Record less ({term('layers', 'GLOB', '[...]')}, "
        f"{term('stats_only', '', 'True')}, {term('once', '', 'True')}), or dump each side in a process of its own "
        "(layerdiff dump A.py -o a.h5; layerdiff dump B.py -o b.h5 --weights-from a.h5) and compare the dumps."
    )


def raised_in(source: str, exc: BaseException, doing: str) -> ModelFileError:
    """A user's exception, turned into our one-line error with their traceback shown above it; running out of
    memory is the machine's limit, not their code's error, and says so without it."""
    if isinstance(exc, MemoryError):
        return ModelFileError(f"{source} ran out of memory {doing} {out_of_memory()}")
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ModelFileError(f"{source} raised {what} {doing} (traceback above).", details=user_traceback(exc))


# The words for an option in the caller's terms: the CLI speaks its flags, the Python API its keywords.
_FLAGS = {
    "layer_map": "--map",
    "ignore": "--ignore",
    "param_map": "--param-map",
    "dtype": "--dtype",
    "seed": "--seed",
    "rtol": "--rtol",
    "layers": "--layers",
    "compression": "--compression",
    "force": "--force",
    "out": "-o",
    "weights_from": "--weights-from",
    "at": "--at",
    "lr": "--lr",
    "steps": "--steps",
    "batch": "--batch",
    "samples": "--samples",
    "zoom": "--zoom",
}
_vocabulary: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("layerdiff_vocabulary", default=None)


def term(keyword: str, cli_value: str = "", api_value: str = "") -> str:
    """How the caller names an option (with a value, when given): ``--map A=B`` on the command line,
    ``layer_map={'A': 'B'}`` in the Python API.

    >>> term("layer_map", "fc3=head", "{'fc3': 'head'}")
    "layer_map={'fc3': 'head'}"
    >>> with speaking_flags():
    ...     term("layer_map", "fc3=head", "{'fc3': 'head'}")
    '--map fc3=head'
    """
    flags = _vocabulary.get()
    if flags is not None:
        flag = flags.get(keyword, f"--{keyword.replace('_', '-')}")
        return f"{flag} {cli_value}" if cli_value else flag
    return f"{keyword}={api_value}" if api_value else f"{keyword}="


@contextlib.contextmanager
def speaking_flags() -> Iterator[None]:
    """Within the block, errors name options as the command line's flags (the CLI runs its commands in one)."""
    token = _vocabulary.set(_FLAGS)
    try:
        yield
    finally:
        _vocabulary.reset(token)
