"""The Python API: the same comparisons and health checks as the CLI, for notebooks and test suites."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any


from layerdiff import contradiction, dumps, files, modelfile, runner, store
from layerdiff import gradcheck as _gradcheck
from layerdiff import health as _health
from layerdiff import overfit as _overfit
from layerdiff import zoom as _zoom
from layerdiff.compare import check_same_run, compare
from layerdiff.errors import DumpError
from layerdiff.isolate import isolated
from layerdiff.namemaps import LayerMap
from layerdiff.progress import Progress, stage
from layerdiff.records import InMemory, Recording
from layerdiff.results import Comparison, GradCheck, Health
from layerdiff.results import Overfit as OverfitResult
from layerdiff.outcome import Result as Result  # re-exported: the API returns it


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
    progress: Progress | None = None,
    zoom: list[str] | None = None,
    ignore: list[str] | None = None,
) -> Result:
    """Compare two live networks in-process; nothing is written to disk. Neither model is modified.

    Args:
        model_a, model_b: a ``torch.nn.Module``, a NumPy network (layer list or forward/backward object), ...
        inputs: an array or a list of arrays fed to both; or ``input_shape`` for seeded inputs.
        targets, loss_a, loss_b: a loss for each side, or neither for a seeded random upstream gradient.
        dtype: ``"float64"`` (both sides cast) or ``"native"``.
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
    pair = runner.run_pair(a, b, dtype, seed, param_map, progress=progress)
    asked = _zoom.explicit(pair.live_a, pair.live, pair.feed, _zoom.named(zoom), dtype) if zoom else []
    result = _isolated(InMemory(pair.a, "a"), InMemory(pair.b, "b"), pair, _layer_map(a, b, layer_map, ignore), rtol, progress)
    _zoom.attach(result, pair.live_a, pair.live, pair.feed, asked)
    return Result(result, pair.links, pair.weights_from, pair.notes)


def _layer_map(a: modelfile.Model, b: modelfile.Model, given: dict[str, str] | None, ignore: list[str] | None) -> LayerMap:
    """The layer map of both files and the caller together, with every ignore glob."""
    return LayerMap({**a.layer_map, **(given or {})}, b.layer_map, (*a.ignore, *b.ignore, *(ignore or [])))


def _isolated(
    a: Recording,
    b: Recording,
    pair: runner.Pair,
    layer_map: dict[str, str] | None,
    rtol: float | None,
    progress: Progress | None,
    live_side: str = "b",
) -> Comparison:
    result = isolated(
        a, b, pair.live, pair.feed, links=pair.links, reference=pair.reference, layer_map=layer_map, rtol=rtol,
        live_side=live_side, progress=progress,
        failures=(pair.a.failure, pair.b.failure) if live_side == "b" else (pair.b.failure, pair.a.failure),
    )
    if live_side == "b" and pair.reference is None:
        contradiction.check(result, a, b, pair.live, pair.feed, pair.links, layer_map, rtol)
    return result


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
    progress: Progress | None = None,
    layers: list[str] | None = None,
    stats_only: bool = False,
    skip_copied_weights: bool = False,
    compression: str | None = None,
    zoom: list[str] | None = None,
    ignore: list[str] | None = None,
) -> Result:
    """``layerdiff run``: capture both model files, write a dump of each to ``out``, and compare them.

    ``out`` defaults to a new ``layerdiff-out/run-N`` folder, so that no earlier dump is overwritten.

    Args:
        layers: globs of the layers to record (with their parameters); the others are neither dumped nor compared.
        stats_only: dump statistics and a hash of every tensor, compare them to find the first divergences, then
            store the values of the layers around them only (with their parameters' gradients).
        skip_copied_weights: leave out of B's dump the parameter values copied from A's (their hashes stay).
        compression: ``"gzip"`` or ``"lzf"``.
        zoom: modules to run operation by operation on both sides (``"h.1.attn"``, or ``"A=B"`` where the sides
            name it differently), naming the first operation that differs; forward culprits are zoomed into anyway.
        ignore: globs of layers left out of the alignment (as for ``compare_models``).
    """
    store.check_compression(compression)
    a, b = modelfile.load(file_a), modelfile.load(file_b)
    layer_map = _layer_map(a, b, layer_map, ignore)
    paths = dumps.paths_for(None if out is None else Path(out), Path(file_a), Path(file_b), force)
    pair = runner.run_pair(a, b, dtype, seed, param_map, twice=not once, progress=progress, layers=layers)
    asked = _zoom.explicit(pair.live_a, pair.live, pair.feed, _zoom.named(zoom), dtype) if zoom else []  # before any dump
    with stage(progress, "health"):  # from the traces in memory: the dumps need not be read for it
        sides = [_health.inspect(InMemory(t, m.source)) for t, m in ((pair.a, a), (pair.b, b))]
    with stage(progress, "write dumps"):
        dumps.write_pair(
            (pair.a, pair.b), paths, force=force, compression=compression, stats_only=stats_only,
            skip_copied_weights=skip_copied_weights, layer_map=layer_map,
        )
    written = [str(p) for p in paths]
    for trace in (pair.a, pair.b):  # in the dumps now, and read from there one tensor at a time
        trace.layers.clear()
        trace.params.clear()
    with store.Dump(paths[0]) as da, store.Dump(paths[1]) as db:
        da.source, db.source = a.source, b.source
        result = _isolated(da, db, pair, layer_map, rtol, progress)
    _zoom.attach(result, pair.live_a, pair.live, pair.feed, asked)
    return Result(result, pair.links, pair.weights_from, pair.notes, written, sides)


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
    force: bool = False,
    once: bool = False,
    progress: Progress | None = None,
    zoom: list[str] | None = None,
    ignore: list[str] | None = None,
) -> Result:
    """``layerdiff compare``: each of ``x``, ``y`` a dump or a model file; a script runs with the dump's weights and
    feed. ``zoom`` as for ``run``: two model files only (a dump's operations were never recorded)."""
    x_dump, y_dump = store.is_dump(x), store.is_dump(y)
    if zoom and (x_dump or y_dump):
        raise _zoom.refused("a dump")
    if not x_dump and not y_dump:
        a, b = modelfile.load(x), modelfile.load(y)
        pair = runner.run_pair(a, b, dtype, seed, param_map, twice=not once, progress=progress)
        asked = _zoom.explicit(pair.live_a, pair.live, pair.feed, _zoom.named(zoom), dtype) if zoom else []
        layer_map = _layer_map(a, b, layer_map, ignore)
        result = _isolated(InMemory(pair.a, a.source), InMemory(pair.b, b.source), pair, layer_map, rtol, progress)
        _zoom.attach(result, pair.live_a, pair.live, pair.feed, asked)
        return Result(result, pair.links, pair.weights_from, pair.notes)
    if x_dump and y_dump:
        with store.Dump(x) as da, store.Dump(y) as db:
            if not force:
                check_same_run(da, db)
            given = LayerMap(layer_map, ignore=ignore or ())
            return Result(compare(da, db, layer_map=given, rtol=rtol, progress=progress), notes=[f"dumps {x} and {y}"])
    dump_path, script = (x, y) if x_dump else (y, x)
    model = modelfile.load(script)
    given = LayerMap({**(layer_map or {}), **(model.layer_map if not x_dump else {})}, model.layer_map if x_dump else {},
                     (*model.ignore, *(ignore or [])))
    return _against_dump(dump_path, model, x_dump, rtol, given, param_map, not once, progress)


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
) -> Result:
    with store.Dump(dump_path) as recorded:
        pair = runner.run_against(recorded.trace(), recorded.source, model, param_map, twice=twice, progress=progress)
        live = InMemory(pair.b, model.source)
        sides: tuple[Recording, Recording] = (recorded, live) if dump_first else (live, recorded)
        result = _isolated(*sides, pair, layer_map, rtol, progress, live_side="b" if dump_first else "a")
    return Result(result, pair.links, pair.weights_from, pair.notes)


def gradcheck(
    model: Any,
    *,
    inputs: Any = None,
    input_shape: Any = None,
    targets: Any = None,
    loss: Any = None,
    samples: int = _gradcheck.SAMPLES,
    full: bool = False,
    at: dict[str, list[tuple[int, ...]]] | None = None,
    seed: int = 0,
) -> GradCheck:
    """``layerdiff gradcheck``: every layer's and parameter's gradient against central differences, in float64.

    Args:
        model: a model file's path, or a live network (copied first; ``inputs``/``input_shape``, ``targets`` and
            ``loss`` then say what the file would).
        samples: random coordinates per tensor, beside the largest-gradient and zero-gradient ones.
        full: every coordinate of every tensor.
        at: extra coordinates, by parameter name or layer name (that layer's input): ``{"fc1.W": [(3, 7)]}``.

    Returns:
        A ``GradCheck``; ``result.passed`` is False when a layer's gradient is wrong, ``result.culprits`` names it.

    >>> import numpy as np
    >>> class Square:
    ...     def forward(self, x): self.x = x; return x * x
    ...     def backward(self, d): return d * self.x      # forgot the 2
    >>> gradcheck([Square()], input_shape=(2, 3)).culprits
    ['0']
    """
    return _gradcheck.gradcheck(_model(model, inputs=inputs, input_shape=input_shape, targets=targets, loss=loss), samples=samples, full=full, at=at, seed=seed)


def inspect(
    path: str | os.PathLike[str],
    *,
    lr: float | None = None,
    activations: dict[str, str] | None = None,
    allow_neg_inf: list[str] | tuple[str, ...] = (),
    dtype: str = "float64",
    seed: int = 0,
) -> Health:
    """``layerdiff inspect``: one network's health from a dump (or a model file, run once first).

    Args:
        lr: a learning rate, to report ‖Δw‖/‖w‖ of one SGD step.
        activations: layer name -> relu, sigmoid, tanh or none, where the layer's kind or name does not say.
        allow_neg_inf: layers whose forward values may hold -inf (attention masks).

    Returns:
        A ``Health``; ``result.flags`` lists the problems found, empty for a healthy network.
    """
    options: dict[str, Any] = {"lr": lr, "activations": activations, "allow_neg_inf": allow_neg_inf}
    if not store.is_dump(path) and Path(path).suffix == ".py":
        model = modelfile.load(path)
        return _health.inspect(InMemory(runner.run_one(model, dtype, seed), model.source), **options)
    with store.Dump(path) as recorded:
        return _health.inspect(recorded, **options)


def overfit(
    model_a: Any,
    model_b: Any = None,
    *,
    steps: int = 200,
    lr: float = 0.1,
    batch: int = 2,
    dtype: str = "float64",
    seed: int = 0,
    param_map: dict[str, str] | None = None,
) -> OverfitResult:
    """``layerdiff overfit``: plain SGD on the first ``batch`` examples; whether the loss goes toward zero.

    With two models (paths or live networks, each copied), the second starts from the first's weights and both get
    the same batch: ``result.parted`` is the first step where their losses differ.
    """
    models = [_model(m) for m in (model_a, model_b) if m is not None]
    return _overfit.overfit(models, steps=steps, lr=lr, batch=batch, dtype=dtype, seed=seed, param_map=param_map)


def _model(x: Any, **declared: Any) -> modelfile.Model:
    """A model file's path, loaded; or a live network, copied so that the caller's stays as it is."""
    if isinstance(x, (str, os.PathLike)):
        return modelfile.load(x)
    return modelfile.from_object(copy.deepcopy(x), source=type(x).__name__, **declared)
