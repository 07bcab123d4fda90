"""The dumps layerdiff writes. The pair a ``run`` writes: where they go (a new ``layerdiff-out/run-N`` unless told), and how: whole,
or stats-only in two passes (statistics of every tensor, then the values of the layers around the first
divergences that those statistics place). And the one a ``dump`` writes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Iterator

from layerdiff import files, runner, store
from layerdiff.compare import compare
from layerdiff.errors import DumpError, term
from layerdiff.modelfile import Model
from layerdiff.health import inspect
from layerdiff.records import InMemory, Recording, Trace
from layerdiff.results import Health

ROOT = Path("layerdiff-out")


def paths_for(out: Path | None, a: Path, b: Path, force: bool) -> tuple[Path, Path]:
    """The two dump paths of a run, checked writable before any work is done to fill them.

    >>> paths_for(Path("out"), Path("x/mine.py"), Path("y/mine.py"), True)
    (PosixPath('out/a-mine.h5'), PosixPath('out/b-mine.h5'))
    """
    folder = out if out is not None else _next_run_folder(ROOT)
    paths = (folder / f"a-{a.stem}.h5", folder / f"b-{b.stem}.h5") if a.stem == b.stem else (folder / f"{a.stem}.h5", folder / f"{b.stem}.h5")
    for p in paths:
        files.check(p, force, DumpError, f"{term('out')} to write elsewhere")
    return paths


def _next_run_folder(root: Path) -> Path:
    n = 1
    while (root / f"run-{n}").exists():
        n += 1
    return root / f"run-{n}"


class Spills:
    """Each side's writer of its whole dump, called as its first run ends (``runner.capture``; B's without the
    parameter values copied from A's, with ``skip_copied_weights``), and each side's health, read from its values
    as they are written: a dump without B's weights could not give its weight norms after."""

    def __init__(self, paths: tuple[Path, Path], sources: tuple[str, str], force: bool, compression: str | None,
                 skip_copied_weights: bool) -> None:
        self.paths, self.sources, self.force, self.compression = paths, sources, force, compression
        self.values = (True, not skip_copied_weights)
        self.health: list[Health] = []

    def writers(self) -> tuple[runner.Spill, runner.Spill]:
        return partial(self._write, 0), partial(self._write, 1)

    def _write(self, side: int, trace: Trace) -> Path:
        self.health.append(inspect(InMemory(trace, self.sources[side])))
        return store.write(trace, self.paths[side], self.force, self.compression, values=self.values[side])


@contextmanager
def recordings(pair: runner.Pair, paths: tuple[Path, Path] | None, source_a: str, source_b: str) -> Iterator[tuple[Recording, Recording]]:
    """The pair's two recordings: its dumps, when its runs were written as they ended (``paths``), else its traces
    in memory."""
    if paths is None:
        yield InMemory(pair.a, source_a), InMemory(pair.b, source_b)
        return
    with store.Dump(paths[0]) as da, store.Dump(paths[1]) as db:
        da.source, db.source = source_a, source_b
        yield da, db


def write_pair(
    traces: tuple[Trace, Trace],
    paths: tuple[Path, Path],
    *,
    force: bool,
    compression: str | None,
    stats_only: bool,
    skip_copied_weights: bool,
    layer_map: dict[str, str] | None,
) -> None:
    """Write both sides' dumps: whole (B without the parameter values copied from A, with
    ``skip_copied_weights``), or stats-only with values kept around the first divergences; both, or neither."""
    with files.together(paths):
        _write_pair(traces, paths, force, compression, stats_only, skip_copied_weights, layer_map)


def _write_pair(
    traces: tuple[Trace, Trace], paths: tuple[Path, Path], force: bool, compression: str | None, stats_only: bool,
    skip_copied_weights: bool, layer_map: dict[str, str] | None,
) -> None:
    if not stats_only:
        store.write(traces[0], paths[0], force, compression)
        store.write(traces[1], paths[1], force, compression, values=not skip_copied_weights)
        return
    for t, p in zip(traces, paths):
        store.write(t, p, force, compression, full=_nothing)
    for t, p, names in zip(traces, paths, _around_divergence(paths, layer_map)):
        store.fill(t, p, names.__contains__)


def _nothing(name: str) -> bool:
    return False


def _around_divergence(paths: tuple[Path, Path], layer_map: dict[str, str] | None) -> tuple[set[str], set[str]]:
    """The layers of each side around the first divergence of each pass, as the statistics of two stats-only dumps
    place them: the layer, the one before (whose values force its input in the replay) and the one after."""
    with store.Dump(paths[0]) as da, store.Dump(paths[1]) as db:
        found = compare(da, db, layer_map=layer_map)
    rows = {(l.layer_a, l.layer_b): n for n, l in enumerate(found.layers)}
    names: tuple[set[str], set[str]] = (set(), set())
    for d in (found.forward, found.backward):
        row = rows.get((d.layer_a, d.layer_b)) if d is not None else None
        for near in found.layers[max(row - 1, 0) : row + 2] if row is not None else []:
            names[0].add(near.layer_a)
            names[1].add(near.layer_b)
    return names


def write_one(
    model: Model,
    out: str | os.PathLike[str],
    dtype: str,
    seed: int,
    weights_from: str | os.PathLike[str] | None,
    force: bool,
    layers: list[str] | None = None,
    compression: str | None = None,
) -> Path:
    """``layerdiff dump``: one model's iteration, on its own weights or those (and the feed) of another dump."""
    if weights_from is None:
        trace = runner.run_one(model, dtype, seed, layers=layers)
    else:
        with store.Dump(weights_from) as source:
            recorded = source.trace()
        dtype, seed = recorded.info.dtype, recorded.info.seed
        trace = runner.run_one(model, dtype, seed, recorded, Path(weights_from).name, layers)
    return store.write(trace, out, overwrite=force, compression=compression)
