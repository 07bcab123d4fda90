"""The errors layerdiff raises when it cannot compare.

    LayerdiffError              anything the user can fix; the CLI prints it on one line, exit 2
    ├── ModelFileError          a model file is missing, defines no model, or raised
    ├── AlignmentError          layers, shapes or parameters of the two sides cannot be matched
    ├── DumpError               a file is not a layerdiff dump, is damaged, reaches outside itself, has another
    │                           schema, would be overwritten, or does not fit on the disk
    ├── ReportError             an HTML report or plot cannot be written, or matplotlib is missing
    └── OptionError             an option's value is out of its range (a tolerance of NaN, a negative seed)

A divergence between two networks is a result, never an exception.
"""

from __future__ import annotations


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


class OptionError(LayerdiffError):
    pass


def user_traceback(exc: BaseException) -> str:
    """The traceback of an exception raised in the user's code, without layerdiff's or runpy's frames."""
    import os
    import traceback

    here = os.path.dirname(os.path.abspath(__file__))
    adapters = os.path.join(os.path.dirname(here), "adapters")
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith((here, adapters)) and "runpy" not in os.path.basename(f.filename)
    ]
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip("\n")


def raised_in(source: str, exc: BaseException, doing: str) -> ModelFileError:
    """A user's exception, turned into our one-line error with their traceback shown above it."""
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ModelFileError(f"{source} raised {what} {doing} (traceback above).", details=user_traceback(exc))
