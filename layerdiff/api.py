"""The Python API: the same comparisons and health checks as the CLI, for notebooks and test suites."""

from __future__ import annotations

import copy
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from layerdiff import dumps, files, modelfile, precision, ranks, runner, store, twins
from layerdiff import health as _health
from layerdiff import steps as _steps
from layerdiff.align import check_map
from layerdiff.api_checks import gradcheck as gradcheck, inspect as inspect, overfit as overfit  # the checks of one network
from layerdiff.compare import check_same_run, compare
from layerdiff.errors import DumpError
from layerdiff.health_report import render_health_summary
from layerdiff.progress import Progress, stage
from layerdiff.records import InMemory, Recording
from layerdiff.report import plain, render, to_json
from layerdiff.results import Comparison, Health
from layerdiff.sides_report import render_sides
from layerdiff.steps_report import StepsResult
from layerdiff.sync import WeightLink


@dataclass
class Result:
    """A comparison with what it was made from; ``str(result)`` is the terminal report."""

    comparison: Comparison
    links: list[WeightLink] | None = None
    weights_from: str = ""
    notes: list[str] = field(default_factory=list)
    dumps: list[str] = field(default_factory=list)
    health: list[Health] = field(default_factory=list)  # per side, for ``run``

    @property
    def match(self) -> bool:
        return self.comparison.match

    def render(self, console: Console, show_all: bool = False) -> None:
        """Print the terminal report; long tables are folded to their interesting rows unless ``show_all``."""
        render(self.comparison, console, links=self.links, weights_from=self.weights_from, notes=self.notes, dumps=self.dumps, show_all=show_all)
        render_sides(self.comparison, console, show_all)
        for side in self.health:
            render_health_summary(side, console)

    def json(self) -> dict[str, Any]:
        report = to_json(self.comparison, links=self.links, weights_from=self.weights_from, notes=self.notes, dumps=self.dumps)
        if self.health:
            report["health"] = dict(zip("ab", (plain(h) for h in self.health)))
        return report

    def __str__(self) -> str:
        buffer = io.StringIO()
        self.render(Console(file=buffer, width=100, color_system=None))
        return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())

    def write_html(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the report as one self-contained HTML file (plots inlined); needs matplotlib.

        Raises:
            ReportError: ``path`` exists and not ``force``, cannot be written, or matplotlib is missing.
        """
        from layerdiff import html

        return html.write(self, path, force=force)

    def write_plot(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the plot of error against depth, in the format its suffix names (.png, .svg, .pdf).

        Raises:
            ReportError: as ``write_html``.
        """
        from layerdiff import plots

        return plots.write(plots.depth(self.comparison), path, force=force)


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
    weights: str = "a",
    progress: Progress | None = None,
) -> Result:
    """Compare two live networks in-process; nothing is written to disk. Neither model is modified.

    Args:
        model_a, model_b: a ``torch.nn.Module``, a NumPy network (layer list or forward/backward object), ...
        inputs: an array or a list of arrays fed to both; or ``input_shape`` for seeded inputs.
        targets, loss_a, loss_b: a loss for each side, or neither for a seeded random upstream gradient.
        dtype: ``"float64"`` (both sides cast) or ``"native"`` (each in its own, judged against its float64 rerun).
        weights: ``"a"`` (A's copied into B) or ``"own"`` (each keeps its own; they are compared first).
        progress: called as the long steps go (``layerdiff.progress``).

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
    pair = twins.run_pair(a, b, dtype, seed, param_map, progress=progress, weights=weights)
    result = twins.compared(InMemory(pair.a, "a"), InMemory(pair.b, "b"), pair, layer_map, rtol, progress)
    return Result(result, pair.links, pair.weights_from, pair.notes)


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
    weights: str = "a",
    force: bool = False,
    once: bool = False,
    progress: Progress | None = None,
    layers: list[str] | None = None,
    stats_only: bool = False,
    skip_copied_weights: bool = False,
    compression: str | None = None,
    steps: int | None = None,
    free_running: bool = False,
    lr: float = 0.01,
) -> Result | StepsResult:
    """``layerdiff run``: capture both model files, write a dump of each to ``out``, and compare them.

    ``out`` defaults to a new ``layerdiff-out/run-N`` folder, so that no earlier dump is overwritten.

    Args:
        layers: globs of the layers to record (with their parameters); the others are neither dumped nor compared.
        stats_only: dump statistics and a hash of every tensor, compare them to find the first divergences, then
            store the values of the layers around them only (with their parameters' gradients).
        skip_copied_weights: leave out of B's dump the parameter values copied from A's (their hashes stay).
        compression: ``"gzip"`` or ``"lzf"``.
        weights: ``"a"`` (A's copied into B) or ``"own"`` (each keeps its own, compared first; not with ``steps``).
        steps: train ``steps`` steps, each side with its file's optimizer (plain SGD at ``lr`` without one), re-synced
            before each step or ``free_running``, each dumped under ``/steps/k/`` (``layerdiff.steps``). None: one
            iteration, no optimizer.
    """
    store.check_compression(compression)
    if steps is not None or free_running:
        _steps.check_steps(1 if steps is None else steps, weights)
    a, b = modelfile.load(file_a), modelfile.load(file_b)
    paths = dumps.paths_for(None if out is None else Path(out), Path(file_a), Path(file_b), force)
    if steps is not None or free_running:
        options = _steps.Options(steps or 1, free_running, dtype, seed, lr, param_map, layer_map, rtol, once, layers,
                                 stats_only, skip_copied_weights, compression)
        return _trained(a, b, options, paths, force, progress)
    pair = twins.run_pair(a, b, dtype, seed, param_map, twice=not once, progress=progress, layers=layers, weights=weights)
    check_map(layer_map, (a.source, [r.name for r in pair.a.layers]), (b.source, [r.name for r in pair.b.layers]))
    with stage(progress, "health"):  # from the traces in memory: the dumps need not be read for it
        sides = [_health.inspect(InMemory(t, m.source)) for t, m in ((pair.a, a), (pair.b, b))]
    with stage(progress, "write dumps"):
        dumps.write_pair((pair.a, pair.b), paths, force=force, compression=compression, stats_only=stats_only,
                         skip_copied_weights=skip_copied_weights, layer_map=layer_map)
    written = [str(p) for p in paths]
    for trace in (pair.a, pair.b):  # in the dumps now, and read from there one tensor at a time
        trace.layers.clear()
        trace.params.clear()
    with store.Dump(paths[0]) as da, store.Dump(paths[1]) as db:
        da.source, db.source = a.source, b.source
        result = twins.compared(da, db, pair, layer_map, rtol, progress)
    return Result(result, pair.links, pair.weights_from, pair.notes, written, sides)


def _trained(a: modelfile.Model, b: modelfile.Model, options: _steps.Options, paths: tuple[Path, Path], force: bool,
             progress: Progress | None) -> StepsResult:
    found = _steps.train(a, b, options, paths, force, progress)
    return StepsResult(found.training, found.links, found.weights_from, found.notes, [str(p) for p in paths])


def dump(
    model_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    dtype: str = "float64",
    seed: int = 0,
    weights_from: str | os.PathLike[str] | None = None,
    force: bool = False,
    layers: list[str] | None = None,
    compression: str | None = None,
) -> Path:
    """``layerdiff dump``: one model file's iteration to an HDF5 file (with another dump's weights and feed, if given);
    ``layers`` and ``compression`` as for ``run``."""
    files.check(out, force, DumpError, "choose another -o")
    store.check_compression(compression)
    return dumps.write_one(modelfile.load(model_file), out, dtype, seed, weights_from, force, layers, compression)


def dump_model(
    model: Any,
    out: str | os.PathLike[str],
    *,
    inputs: Any = None,
    input_shape: Any = None,
    targets: Any = None,
    loss: Any = None,
    dtype: str = "float64",
    seed: int = 0,
    force: bool = False,
) -> Path:
    """``dump`` for a live network: its own weights, the given (or seeded) inputs. The model is not modified.

    >>> import numpy as np, tempfile, pathlib
    >>> class Scale:
    ...     def forward(self, x): return 2 * x
    ...     def backward(self, d): return 2 * d
    >>> dump_model([Scale()], pathlib.Path(tempfile.mkdtemp()) / "scale.h5", input_shape=(2, 3)).name
    'scale.h5'
    """
    files.check(out, force, DumpError, "choose another path")
    live = modelfile.from_object(copy.deepcopy(model), loss=loss, inputs=inputs, input_shape=input_shape, targets=targets)
    return dumps.write_one(live, out, dtype, seed, None, force)


def compare_paths(
    x: str | os.PathLike[str],
    y: str | os.PathLike[str],
    *,
    dtype: str = "float64",
    seed: int = 0,
    rtol: float | None = None,
    layer_map: dict[str, str] | None = None,
    param_map: dict[str, str] | None = None,
    weights: str = "a",
    force: bool = False,
    once: bool = False,
    progress: Progress | None = None,
) -> Result:
    """``layerdiff compare``: each of ``x``, ``y`` a dump, the dumps of every rank of a sharded run (``step.rank*.h5``)
    or a model file; a script runs with the dump's weights and feed (its own, compared with them, when
    ``weights="own"``)."""
    shards = ranks.expand(x)
    if shards is not None:
        found, links, source, notes = ranks.against(shards, Path(y), rtol=rtol, layer_map=layer_map, param_map=param_map,
                                                    twice=not once, progress=progress)
        return Result(found, links, source, notes)
    x_dump, y_dump = store.is_dump(x), store.is_dump(y)
    if not x_dump and not y_dump:
        a, b = modelfile.load(x), modelfile.load(y)
        pair = twins.run_pair(a, b, dtype, seed, param_map, twice=not once, progress=progress, weights=weights)
        result = twins.compared(InMemory(pair.a, a.source), InMemory(pair.b, b.source), pair, layer_map, rtol, progress)
        return Result(result, pair.links, pair.weights_from, pair.notes)
    if x_dump and y_dump:
        with store.Dump(x) as da, store.Dump(y) as db:
            if not force:
                check_same_run(da, db)
            precision.refuse_unjudged(da.info, db.info, rtol, da.source, db.source)
            return Result(compare(da, db, layer_map=layer_map, rtol=rtol, progress=progress), notes=[f"dumps {x} and {y}"])
    dump_path, script = (x, y) if x_dump else (y, x)
    return _against_dump(dump_path, modelfile.load(script), x_dump, rtol, layer_map, param_map, not once, progress, weights)


def compare_to_dump(
    golden: str | os.PathLike[str],
    model: Any,
    *,
    loss: Any = None,
    rtol: float | None = None,
    layer_map: dict[str, str] | None = None,
    param_map: dict[str, str] | None = None,
) -> Result:
    """A live network against a golden dump: run on the dump's weights, inputs and upstream gradient, and compare,
    the dump as side A. The model is not modified.

    Args:
        golden: a dump written by ``layerdiff dump`` or ``dump_model``.
        model: the live network; ``loss`` its loss when the dump was made with one.

    Returns:
        A ``Result`` with culprits (the model is replayed teacher-forced with the dump's values).

    Raises:
        DumpError: ``golden`` is missing or not a dump.

    >>> import tempfile, pathlib
    >>> class Scale:
    ...     def forward(self, x): return 3 * x
    ...     def backward(self, d): return 3 * d
    >>> golden = dump_model([Scale()], pathlib.Path(tempfile.mkdtemp()) / "scale.h5", input_shape=(2, 3))
    >>> compare_to_dump(golden, [Scale()]).match
    True
    """
    live = modelfile.from_object(copy.deepcopy(model), source="model", loss=loss)
    return _against_dump(golden, live, True, rtol, layer_map, param_map, True, None)


def _against_dump(
    dump_path: str | os.PathLike[str],
    model: modelfile.Model,
    dump_first: bool,
    rtol: float | None,
    layer_map: dict[str, str] | None,
    param_map: dict[str, str] | None,
    twice: bool,
    progress: Progress | None,
    weights: str = "a",
) -> Result:
    with store.Dump(dump_path) as recorded:
        pair = runner.run_against(recorded.trace(), recorded.source, model, param_map, twice, progress, weights)
        live = InMemory(pair.b, model.source)
        sides: tuple[Recording, Recording] = (recorded, live) if dump_first else (live, recorded)
        result = twins.compared(*sides, pair, layer_map, rtol, progress, live_side="b" if dump_first else "a")
    return Result(result, pair.links, pair.weights_from, pair.notes)
