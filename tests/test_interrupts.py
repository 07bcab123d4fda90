"""Stopping layerdiff leaves nothing behind and says so in its exit code: a signal during a dump's write exits 128 +
its number (130 for Ctrl-C, 143 for SIGTERM) with no dump, no temporary file and no run folder; a signal swallowed
on the way still stops it; a full disk is the user's error on one line; the temporary files of a process that died
are removed by the next write."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerdiff import files, signals, store

from conftest import one_error_line, write
from test_bad_input import GOOD, NET

IDENTITY = "class Identity:\n    def forward(self, x):\n        return x\n    def backward(self, d):\n        return d\n"

# The CLI, with each dataset's write slowed down, so that a signal surely lands while a dump is being written.
SLOW_CLI = (
    "import signal, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"  # a background job may ignore it
    "from layerdiff import store\nfrom layerdiff.cli import main\n"
    "write = store.writer._dataset\n"
    "def slow(*args, **kwargs):\n    time.sleep(0.2)\n    write(*args, **kwargs)\n"
    "store.writer._dataset = slow\nmain()\n"
)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_a_write_exits_128_plus_its_number_and_leaves_nothing(tmp_path, sig, code):
    write(tmp_path, "good.py", GOOD)
    run = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "run", "good.py", "good.py", "--once"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "layerdiff-out" / "run-1"
    deadline = time.monotonic() + 120
    while not (out.exists() and any(p.name.endswith(".tmp") for p in out.iterdir())):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.05)
    run.send_signal(sig)
    _, err = run.communicate(timeout=120)
    assert run.returncode == code, err
    assert one_error_line(err) == f"error: interrupted ({signal.Signals(sig).name})"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.py"]  # no dump, no temporary file, no run folder


def test_a_signal_swallowed_during_a_write_still_stops_it(cli, tmp_path, monkeypatch):
    # h5py closes objects from weakref callbacks, where Python prints a KeyboardInterrupt as "Exception ignored"
    # and drops it. The signal was noted when it came: the write stops at the next dataset all the same.
    write(tmp_path, "good.py", GOOD)
    original, calls = store.writer._dataset, []

    def swallowing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # what a __del__ does with it
        original(*args, **kwargs)

    monkeypatch.setattr(store.writer, "_dataset", swallowing)
    monkeypatch.setattr(signal, "getsignal", lambda s: signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    code, _, err = cli("dump", "good.py", "-o", "good.h5")
    assert code == 130 and one_error_line(err) == "error: interrupted (SIGINT)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.py"]


def test_signals_are_restored_after_a_command(cli, tmp_path):
    before = {s: signal.getsignal(s) for s in signals.CAUGHT}
    write(tmp_path, "good.py", GOOD)
    assert cli("dump", "good.py", "-o", "good.h5")[0] == 0
    assert {s: signal.getsignal(s) for s in signals.CAUGHT} == before


def test_a_temporary_file_of_a_process_that_died_is_removed_by_the_next_write(cli, tmp_path):
    write(tmp_path, "good.py", GOOD)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".good.h5.{int(dead.stdout)}.k3j2h1.tmp"
    alive = tmp_path / f".good.h5.{os.getppid()}.a8b7c6.tmp"  # a process that runs: maybe still writing it
    unrelated = tmp_path / ".other.h5.1.zzzz.tmp"
    for p in (stale, alive, unrelated):
        p.write_bytes(b"half a dump")
    assert cli("dump", "good.py", "-o", "good.h5")[0] == 0
    assert not stale.exists() and alive.exists() and unrelated.exists()


def test_a_temporary_file_names_its_process_and_goes_with_the_folders_made_for_it(tmp_path):
    seen = []
    with pytest.raises(RuntimeError):
        with files.replacing(tmp_path / "new" / "deeper" / "x.h5", False, store.DumpError) as tmp:
            seen.append(tmp.name)
            raise RuntimeError
    assert seen[0].startswith(f".x.h5.{os.getpid()}.") and seen[0].endswith(".tmp")
    assert list(tmp_path.iterdir()) == []


def _limited(limit: int) -> str:
    """The CLI in a process whose files may not grow past ``limit`` bytes: a write past it fails with EFBIG, as a
    write on a full disk fails with ENOSPC. (Set in the child itself: forking a process that holds JAX warns.)"""
    return (
        "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from layerdiff.cli import main\nmain()\n"
    )


def test_a_full_disk_is_one_line_and_leaves_no_half_written_pair(tmp_path):
    # Side A's dump fits under the limit on a file's size, B's (the same layer, then 30 more) does not: neither stays.
    write(tmp_path, "a.py", GOOD)
    write(tmp_path, "b.py", NET + IDENTITY + "model = [Dense()] + [Identity() for _ in range(30)]\n")
    cli = [sys.executable, "-c", "from layerdiff.cli import main; main()"]
    done = subprocess.run([*cli, "dump", "a.py", "-o", "probe.h5"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    limit = (tmp_path / "probe.h5").stat().st_size * 3 // 2
    (tmp_path / "probe.h5").unlink()
    done = subprocess.run([sys.executable, "-c", _limited(limit), "run", "a.py", "b.py", "--once"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert "Cannot write layerdiff-out/run-1/b.h5: File too large. Nothing was written; free some space" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.py", "b.py"]  # not A's dump, not the run folder


def test_disk_errors_are_told_from_bugs():
    full = OSError(28, "Can't synchronously write data (file write failed: errno = 28, error message = 'No space left on device')")
    assert files.disk_error(full) and "No space left on device" in files.disk_message(Path("a.h5"), full)
    hdf5 = OSError("Can't write data (file write failed: time = Tue\n, errno = 28, error message = 'No space left on device')")
    assert files.disk_error(hdf5)
    assert not files.disk_error(OSError("Unable to synchronously create dataset (name already exists)"))
