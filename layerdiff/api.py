"""The Python API: the same comparisons as the CLI, for notebooks and test suites."""

from __future__ import annotations

import copy
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from layerdiff import isolate, modelfile, runner, store
from layerdiff.align import Alignment, align
from layerdiff.compare import Comparison, check_same_run, compare
from layerdiff.errors import DumpError
from layerdiff.records import InMemory, Recording
from layerdiff.report import render, to_json
from layerdiff.sync import WeightLink


@dataclass
class Result:
    """A comparison with what it was made from; ``str(result)`` is the terminal report."""

    comparison: Comparison
    links: list[WeightLink] | None = None
    weights_from: str = ""
    notes: list[str] = field(default_factory=list)
    dumps: list[str] = field(default_factory=list)

    @property
    def match(self) -> bool:
        return self.comparison.match

    def render(self, console: Console) -> None:
        render(self.comparison, console, links=self.links, weights_from=self.weights_from, notes=self.notes, dumps=self.dumps)

    def json(self) -> dict[str, Any]:
        return to_json(self.comparison, links=self.links, weights_from=self.weights_from, notes=self.notes, dumps=self.dumps)

    def __str__(self) -> str:
        buffer = io.StringIO()
        self.render(Console(file=buffer, width=100, color_system=None))
        return buffer.getvalue()


def compare_models(
    model_a: Any,
    model_b: Any,
    *,
    inputs: Any = None,
    input_shape: Any = None,
    targets: Any = None,
    loss_a: Any = None,
    loss_b: Any = None,
    dtype: str = "float64",
    seed: int = 0,
    rtol: float | None = None,
    layer_map: dict[str, str] | None = None,
    param_map: dict[str, str] | None = None,
) -> Result:
    """Compare two live networks in-process; nothing is written to disk. Neither model is modified.

    Args:
        model_a, model_b: a ``torch.nn.Module``, a NumPy network (layer list or forward/backward object), ...
        inputs: an array or a list of arrays fed to both; or ``input_shape`` for seeded inputs.
        targets, loss_a, loss_b: a loss for each side, or neither for a seeded random upstream gradient.
        dtype: ``"float64"`` (both sides cast) or ``"native"``.

    Returns:
        A ``Result``; ``result.match`` is True when every layer agrees within tolerance.

    >>> import numpy as np
    >>> class Scale:
    ...     def forward(self, x): return 2 * x
    ...     def backward(self, d): return 2 * d
    >>> compare_models([Scale()], [Scale()], input_shape=(2, 3)).match
    True
    """
    a = modelfile.from_object(copy.deepcopy(model_a), source="a", loss=loss_a, inputs=inputs, input_shape=input_shape, targets=targets)
    b = modelfile.from_object(copy.deepcopy(model_b), source="b", loss=loss_b)
    pair = runner.run_pair(a, b, dtype, seed, param_map)
    result = _isolated(InMemory(pair.a, "a"), InMemory(pair.b, "b"), b, pair, layer_map, rtol)
    return Result(result, pair.links, pair.weights_from, pair.notes)


def _isolated(
    a: Recording,
    b: Recording,
    live: modelfile.Model,
    pair: runner.Pair,
    layer_map: dict[str, str] | None,
    rtol: float | None,
    live_side: str = "b",
) -> Comparison:
    """Align, replay the live side teacher-forced with the other side's values, and compare with culprits."""
    alignment = align(a, b, layer_map)
    forcing = isolate.forcing_from(b, a, _swapped(alignment)) if live_side == "a" else isolate.forcing_from(a, b, alignment)
    local = InMemory(isolate.replay(live, pair.feed, forcing), live.source)
    reference = InMemory(pair.reference, b.source) if pair.reference is not None else None
    links = pair.links if live_side == "b" else None
    return compare(a, b, links=links, alignment=alignment, local=local, local_side=live_side, reference=reference, rtol=rtol)


def _swapped(alignment: Alignment) -> Alignment:
    return Alignment([(j, i) for i, j in alignment.pairs], alignment.only_b, alignment.only_a)


def run(
    file_a: str | os.PathLike[str],
    file_b: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    dtype: str = "float64",
    seed: int = 0,
    rtol: float | None = None,
    layer_map: dict[str, str] | None = None,
    param_map: dict[str, str] | None = None,
    force: bool = False,
    once: bool = False,
) -> Result:
    """``layerdiff run``: capture both model files, write a dump of each to ``out``, and compare them.

    ``out`` defaults to a new ``layerdiff-out/run-N`` folder, so that no earlier dump is overwritten.
    """
    a, b = modelfile.load(file_a), modelfile.load(file_b)
    folder = Path(out) if out is not None else _next_run_folder(Path("layerdiff-out"))
    paths = _dump_paths(folder, Path(file_a), Path(file_b))
    if not force:
        for p in paths:
            if p.exists():
                raise DumpError(f"{p} exists. Pass --force to replace it, or -o to write elsewhere.")
    pair = runner.run_pair(a, b, dtype, seed, param_map, twice=not once)
    written = [str(store.write(t, p, overwrite=force)) for t, p in zip((pair.a, pair.b), paths)]
    with store.Dump(paths[0]) as da, store.Dump(paths[1]) as db:
        da.source, db.source = a.source, b.source
        result = _isolated(da, db, b, pair, layer_map, rtol)
    return Result(result, pair.links, pair.weights_from, pair.notes, written)


def dump(
    model_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    dtype: str = "float64",
    seed: int = 0,
    weights_from: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """``layerdiff dump``: one model file's iteration to an HDF5 file (with another dump's weights and feed, if given)."""
    out = Path(out)
    if out.exists() and not force:
        raise DumpError(f"{out} exists. Pass --force to replace it, or choose another -o.")
    model = modelfile.load(model_file)
    if weights_from is None:
        trace = runner.run_one(model, dtype, seed)
    else:
        with store.Dump(weights_from) as source:
            recorded = source.trace()
        trace = runner.run_one(model, str(recorded.meta.get("dtype", dtype)), int(recorded.meta.get("seed", seed)), recorded, Path(weights_from).name)
    return store.write(trace, out, overwrite=force)


def compare_paths(
    x: str | os.PathLike[str],
    y: str | os.PathLike[str],
    *,
    dtype: str = "float64",
    seed: int = 0,
    rtol: float | None = None,
    layer_map: dict[str, str] | None = None,
    param_map: dict[str, str] | None = None,
    force: bool = False,
    once: bool = False,
) -> Result:
    """``layerdiff compare``: each of ``x``, ``y`` a dump or a model file; a script runs with the dump's weights and feed."""
    x_dump, y_dump = store.is_dump(x), store.is_dump(y)
    if not x_dump and not y_dump:
        a, b = modelfile.load(x), modelfile.load(y)
        pair = runner.run_pair(a, b, dtype, seed, param_map, twice=not once)
        result = _isolated(InMemory(pair.a, a.source), InMemory(pair.b, b.source), b, pair, layer_map, rtol)
        return Result(result, pair.links, pair.weights_from, pair.notes)
    if x_dump and y_dump:
        with store.Dump(x) as da, store.Dump(y) as db:
            if not force:
                check_same_run(da, db)
            return Result(compare(da, db, layer_map=layer_map, rtol=rtol), notes=[f"dumps {x} and {y}"])
    dump_path, script = (x, y) if x_dump else (y, x)
    with store.Dump(dump_path) as recorded:
        model = modelfile.load(script)
        pair = runner.run_against(recorded.trace(), recorded.source, model, param_map, twice=not once)
        live = InMemory(pair.b, model.source)
        sides: tuple[Recording, Recording] = (recorded, live) if x_dump else (live, recorded)
        result = _isolated(*sides, model, pair, layer_map, rtol, live_side="b" if x_dump else "a")
    return Result(result, pair.links, pair.weights_from, pair.notes)


def _next_run_folder(root: Path) -> Path:
    n = 1
    while (root / f"run-{n}").exists():
        n += 1
    return root / f"run-{n}"


def _dump_paths(folder: Path, a: Path, b: Path) -> tuple[Path, Path]:
    if a.stem == b.stem:
        return folder / f"a-{a.stem}.h5", folder / f"b-{b.stem}.h5"
    return folder / f"{a.stem}.h5", folder / f"{b.stem}.h5"
