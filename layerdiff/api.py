"""The Python API: the same comparisons and health checks as the CLI, for notebooks and test suites."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any


from layerdiff import dumps, files, modelfile, precision, ranks, runner, store, twins
from layerdiff import health as _health
from layerdiff import steps as _steps
from layerdiff import zoom as _zoom
from layerdiff.align import align
from layerdiff.api_checks import gradcheck as gradcheck, inspect as inspect, overfit as overfit  # the checks of one network
from layerdiff.compare import check_same_run, compare
from layerdiff.errors import DumpError
from layerdiff.namemaps import LayerMap
from layerdiff.outcome import Result as Result  # re-exported: the API returns it
from layerdiff.progress import Progress, stage
from layerdiff.records import InMemory, Recording
from layerdiff.steps_report import StepsResult


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
    zoom: list[str] | None = None,
    ignore: list[str] | None = None,
) -> Result:
    """Compare two live networks in-process; nothing is written to disk. Neither model is modified.

    Args:
        model_a, model_b: a ``torch.nn.Module``, a NumPy network (layer list or forward/backward object), ...
        inputs: an array or a list of arrays fed to both; or ``input_shape`` for seeded inputs.
        targets, loss_a, loss_b: a loss for each side, or neither for a seeded random upstream gradient.
        dtype: ``"float64"`` (both sides cast) or ``"native"`` (each in its own, judged against its float64 rerun).
        weights: ``"a"`` (A's copied into B) or ``"own"`` (each keeps its own; they are compared first).
        layer_map, param_map: names of A's layers (parameters) to B's; a key ``re:PATTERN`` or ``prefix.*`` pairs
            every name it matches (see ``layerdiff.namemaps``).
        ignore: globs of layers that one side has and the other has not (a dropout), left out of the alignment.
        progress: called as the long steps go (``layerdiff.progress``).
        zoom: modules to run operation by operation on both sides, as for ``run``.

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
    asked = _zoom.explicit(pair.live_a, pair.live, pair.feed, _zoom.named(zoom), dtype) if zoom else []
    result = twins.compared(InMemory(pair.a, "a"), InMemory(pair.b, "b"), pair, _layer_map(a, b, layer_map, ignore), rtol, progress)
    _zoom.attach(result, pair.live_a, pair.live, pair.feed, asked)
    return Result(result, pair.links, pair.weights_from, pair.notes)


def _layer_map(a: modelfile.Model, b: modelfile.Model, given: dict[str, str] | None, ignore: list[str] | None) -> LayerMap:
    """The layer map of both files and the caller together, with every ignore glob."""
    return LayerMap({**a.layer_map, **(given or {})}, b.layer_map, (*a.ignore, *b.ignore, *(ignore or [])))


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
    zoom: list[str] | None = None,
    ignore: list[str] | None = None,
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
        zoom: modules to run operation by operation on both sides (``"h.1.attn"``, or ``"A=B"`` where the sides
            name it differently), naming the first operation that differs; forward culprits are zoomed into anyway.
        ignore: globs of layers left out of the alignment (as for ``compare_models``).
    """
    store.check_compression(compression)
    if steps is not None or free_running:
        _steps.check_steps(1 if steps is None else steps, weights)
    a, b = modelfile.load(file_a), modelfile.load(file_b)
    layer_map = _layer_map(a, b, layer_map, ignore)
    paths = dumps.paths_for(None if out is None else Path(out), Path(file_a), Path(file_b), force)
    if steps is not None or free_running:
        options = _steps.Options(steps or 1, free_running, dtype, seed, lr, param_map, layer_map, rtol, once, layers,
                                 stats_only, skip_copied_weights, compression)
        return _trained(a, b, options, paths, force, progress)
    # Each side's dump is written as its first run ends (not in stats-only, whose second pass needs the values, nor
    # with --dtype native, whose twins are judged in memory): no two whole runs are held at once.
    spills = None if stats_only or dtype != "float64" else dumps.Spills(paths, (a.source, b.source), force, compression, skip_copied_weights)
    with files.together(paths):  # a failure at any point leaves neither dump
        pair = twins.run_pair(a, b, dtype, seed, param_map, twice=not once, progress=progress, layers=layers,
                              weights=weights, spill=spills.writers() if spills else None)
        with dumps.recordings(pair, paths if spills else None, a.source, b.source) as (ra, rb):
            align(ra, rb, layer_map)  # a wrong map is said before any comparison
            asked = _zoom.explicit(pair.live_a, pair.live, pair.feed, _zoom.named(zoom), dtype) if zoom else []
            if spills is None:
                with stage(progress, "health"):
                    sides = [_health.inspect(r) for r in (ra, rb)]
            else:
                sides = spills.health
        if spills is None:
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
    _zoom.attach(result, pair.live_a, pair.live, pair.feed, asked)
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
    zoom: list[str] | None = None,
    ignore: list[str] | None = None,
) -> Result:
    """``layerdiff compare``: each of ``x``, ``y`` a dump, the dumps of every rank of a sharded run (``step.rank*.h5``)
    or a model file; a script runs with the dump's weights and feed (its own, compared with them, when
    ``weights="own"``). ``zoom`` as for ``run``: two model files only (a dump's operations were never recorded)."""
    shards = ranks.expand(x)
    if shards is not None:
        found, links, source, notes = ranks.against(shards, Path(y), rtol=rtol, layer_map=layer_map, param_map=param_map,
                                                    twice=not once, progress=progress)
        return Result(found, links, source, notes)
    x_dump, y_dump = store.is_dump(x), store.is_dump(y)
    if zoom and (x_dump or y_dump):
        raise _zoom.refused("a dump")
    if not x_dump and not y_dump:
        a, b = modelfile.load(x), modelfile.load(y)
        pair = twins.run_pair(a, b, dtype, seed, param_map, twice=not once, progress=progress, weights=weights)
        asked = _zoom.explicit(pair.live_a, pair.live, pair.feed, _zoom.named(zoom), dtype) if zoom else []
        layer_map = _layer_map(a, b, layer_map, ignore)
        result = twins.compared(InMemory(pair.a, a.source), InMemory(pair.b, b.source), pair, layer_map, rtol, progress)
        _zoom.attach(result, pair.live_a, pair.live, pair.feed, asked)
        return Result(result, pair.links, pair.weights_from, pair.notes)
    if x_dump and y_dump:
        with store.Dump(x) as da, store.Dump(y) as db:
            if not force:
                check_same_run(da, db)
            precision.refuse_unjudged(da.info, db.info, rtol, da.source, db.source)
            given = LayerMap(layer_map, ignore=ignore or ())
            return Result(compare(da, db, layer_map=given, rtol=rtol, progress=progress), notes=[f"dumps {x} and {y}"])
    dump_path, script = (x, y) if x_dump else (y, x)
    model = modelfile.load(script)
    given = LayerMap({**(layer_map or {}), **(model.layer_map if not x_dump else {})}, model.layer_map if x_dump else {},
                     (*model.ignore, *(ignore or [])))
    return _against_dump(dump_path, model, x_dump, rtol, given, param_map, not once, progress, weights)


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
