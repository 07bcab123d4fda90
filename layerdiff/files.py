"""Output files written whole or not at all: a temporary file beside the destination, renamed onto it when complete.

An existing file is replaced only when asked; a path that cannot be written is the user's error, said in one line.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from layerdiff.errors import LayerdiffError, term


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
    """A temporary path to write to; renamed onto ``path`` when the block ends without an exception, else removed.

    Raises:
        error: ``path`` exists and ``overwrite`` is false, or its folder cannot be created or written.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with replacing(target, overwrite=False, error=LayerdiffError) as tmp:
    ...     _ = tmp.write_text("whole")
    >>> target.read_text()
    'whole'
    """
    path = check(path, overwrite, error, elsewhere)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise error(f"Cannot write {path}: {exc.strerror or exc}. Choose a folder you can write to.") from None
    os.close(fd)
    tmp = Path(name)
    # The writer makes the file itself: HDF5 writing into an existing (if empty) file runs at half the speed of a
    # new one, its close truncating what it wrote. The random name stays unused in the meantime.
    tmp.unlink()
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the file is the user's to share
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
