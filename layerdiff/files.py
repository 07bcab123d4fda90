"""Output files written whole or not at all: a temporary file beside the destination, renamed onto it when complete.

An existing file is replaced only when asked; a path that cannot be written, or a disk that fills up, is the
user's error, said in one line. A temporary file is named ``.NAME.<pid>.<random>.tmp``: removed when its write
fails or a signal stops it, and, when the process died without a chance to (SIGKILL, a power cut), by the next
write of the same file, which finds its process gone. Folders made for a file that was never written are removed
again, and ``together`` makes several files one write: all of them, or none.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from layerdiff import signals
from layerdiff.errors import LayerdiffError, term

# The disk's errors, not layerdiff's: full, over quota, a file over the size limit, read-only, failing.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)


def check(path: str | os.PathLike[str], overwrite: bool, error: type[LayerdiffError], elsewhere: str) -> Path:
    """Refuse an existing ``path`` unless ``overwrite``, before any work is done to fill it.

    Raises:
        error: ``path`` exists, is a folder, or lies where no file can be written.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{path} is a folder. Give a file name, e.g. {path / 'report.html'}.")
    if path.exists() and not overwrite:
        raise error(f"{path} exists. Pass {term('force', '', 'True')} to replace it, or {elsewhere}.")
    folder = next(p for p in path.absolute().parents if p.exists())  # the folders below it are made when writing
    if not folder.is_dir():
        raise error(f"Cannot write {path}: {folder} is a file, not a folder. Choose another path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(f"Cannot write {path}: no permission to write in {folder}. Choose a folder you can write to.")
    return path


@contextmanager
def replacing(
    path: str | os.PathLike[str], overwrite: bool, error: type[LayerdiffError], elsewhere: str = "write elsewhere"
) -> Iterator[Path]:
    """A temporary path to write to; renamed onto ``path`` when the block ends without an exception, else removed
    (with the folders made for it). A full disk met in the block is ``error``, in one line.

    Raises:
        error: ``path`` exists and ``overwrite`` is false, its folder cannot be created or written, or the disk
            is full.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with replacing(target, overwrite=False, error=LayerdiffError) as tmp:
    ...     _ = tmp.write_text("whole")
    >>> target.read_text()
    'whole'
    """
    path = check(path, overwrite, error, elsewhere)
    made = _missing_folders(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _remove_folders(made)
        raise error(f"Cannot write {path}: {exc.strerror or exc}. Choose a folder you can write to.") from None
    os.close(fd)
    tmp = Path(name)
    # The writer makes the file itself: HDF5 writing into an existing (if empty) file runs at half the speed of a
    # new one, its close truncating what it wrote. The random name stays unused in the meantime.
    tmp.unlink()
    try:
        yield tmp
        signals.checkpoint()  # a signal swallowed while writing: the file may be whole, the user asked to stop
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the file is the user's to share
        os.replace(tmp, path)
    except BaseException as exc:
        with signals.deferred():  # a second Ctrl-C must not leave the temporary file behind
            tmp.unlink(missing_ok=True)
            _remove_folders(made)
        if isinstance(exc, (OSError, RuntimeError)) and disk_error(exc):  # HDF5 says some as RuntimeError
            raise error(disk_message(path, exc)) from None
        raise


@contextmanager
def together(paths: Iterable[str | os.PathLike[str]]) -> Iterator[None]:
    """Files written in the block as one: when it fails, those of ``paths`` it wrote are removed again (a pair of
    dumps is both or neither), with the folders it made for them."""
    written = [Path(p) for p in paths]
    before = {p: _identity(p) for p in written}
    made = sorted({f for p in written for f in _missing_folders(p)}, key=lambda f: -len(f.parts))
    try:
        yield
    except BaseException:
        with signals.deferred():
            for p in written:
                if _identity(p) is not None and _identity(p) != before[p]:
                    p.unlink(missing_ok=True)
            _remove_folders(made)
        raise


def remove_stale(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` left by processes that no longer run; returns those removed."""
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return removed
    for name in names:
        pid = name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                (path.parent / name).unlink()
                removed.append(path.parent / name)
            except OSError:
                pass  # another process cleaned it first, or it is not ours to remove
    return removed


def disk_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the disk's (full, over quota or size limit, read-only, failing), not a bug.

    HDF5 reports a failed write as an OSError (or, closing an object, a RuntimeError) whose message holds the
    system's errno, not always in ``errno``.
    """
    if getattr(exc, "errno", None) in DISK_ERRORS:
        return True
    text = str(exc)
    return any(f"errno = {n}," in text or os.strerror(n) in text for n in DISK_ERRORS)


def disk_message(path: Path, exc: BaseException) -> str:
    """One line for a write the disk refused."""
    text = str(exc)
    found = next((n for n in DISK_ERRORS if getattr(exc, "errno", None) == n or f"errno = {n}," in text or os.strerror(n) in text), None)
    reason = os.strerror(found) if found is not None else " ".join(text.split())
    if found in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"Cannot write {path}: {reason}. Nothing was written; free some space, or write elsewhere with -o."
    return f"Cannot write {path}: {reason}. Nothing was written; write elsewhere with -o."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, and belongs to someone else
    return True


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


def _missing_folders(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, deepest first."""
    missing = []
    for folder in path.absolute().parents:
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()  # only when empty: another file written there since stays, and its folder with it
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
