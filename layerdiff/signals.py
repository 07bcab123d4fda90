"""Ctrl-C and termination: exit codes 128 + the signal's number, and no signal lost.

Python runs a signal handler between two bytecodes of the main thread, wherever that is: inside a ``__del__`` or a
weakref callback (h5py closes its objects from them), the exception it raises is printed as "Exception ignored"
and dropped, and the program carries on as if the signal had never come. So a signal is also noted when it
arrives, and raised again at the next ``checkpoint`` (each dataset of a dump written, each file renamed into
place) and when the command ends: once a signal has come, nothing is completed and the exit code says so.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator

CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_pending: list[int] = []


class Interrupted(KeyboardInterrupt):
    """A signal asked layerdiff to stop: ``code`` is the exit status a shell reports for it (130 for Ctrl-C).

    A KeyboardInterrupt, so that it passes through ``except Exception`` in the user's code as Ctrl-C does.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.code = 128 + signum


def _note(signum: int, frame: FrameType | None) -> None:
    _pending.append(signum)
    raise Interrupted(signum)


def pending() -> Interrupted | None:
    """The first signal that came while ``handled`` was in force, or None."""
    return Interrupted(_pending[0]) if _pending else None


def checkpoint() -> None:
    """Raise the signal that came, if one did, even if it was swallowed where it was first raised.

    Raises:
        Interrupted: a signal came since ``handled`` began.
    """
    interrupted = pending()
    if interrupted is not None:
        raise interrupted


@contextmanager
def deferred() -> Iterator[None]:
    """Signals that come during the block (a cleanup that must finish) are delivered after it."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, CAUGHT)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextmanager
def handled() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` for the block's duration (in the main thread; elsewhere
    Python cannot install handlers and nothing changes), except those the process was told to ignore; the
    previous handlers are restored after it.

    >>> with handled():
    ...     pending() is None
    True
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A signal the caller ignores stays ignored: `nohup` ignores SIGHUP, a shell's background job SIGINT.
    before: dict[int, Any] = {s: signal.getsignal(s) for s in CAUGHT if signal.getsignal(s) is not signal.SIG_IGN}
    _pending.clear()
    for number in before:
        signal.signal(number, _note)
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
        _pending.clear()
