"""Writing a dump: a trace laid out as the schema of ``layerdiff.store`` says, atomically; and a stats-only dump's
second pass, which stores the tensors of the layers it names."""

from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from layerdiff import files, signals
from layerdiff.errors import DumpError, term
from layerdiff.records import RegionRecord, RunInfo, Trace, owned
from layerdiff.stats import statistics, summarize

SCHEMA = 2


def _group_name(index: int, name: str) -> str:
    return f"{index:04d}_{name.replace('/', '|')}"


COMPRESSIONS = ("gzip", "lzf")


def write(
    trace: Trace,
    path: str | os.PathLike[str],
    overwrite: bool = False,
    compression: str | None = None,
    full: Callable[[str], bool] | None = None,
    values: bool = True,
) -> Path:
    """Write ``trace`` to ``path`` atomically.

    Args:
        compression: ``"gzip"`` or ``"lzf"`` (with byte shuffling), or None.
        full: which layers keep their tensors (by name; a parameter goes with its layer); the others keep only
            their statistics (``records.statistics``): a stats-only dump. None: every layer.
        values: False leaves out the parameter values, keeping their statistics and hash (the side whose weights
            were copied from the other).

    Raises:
        DumpError: ``path`` exists and ``overwrite`` is false, an unknown compression, or the disk is full.
    """
    path = Path(path)
    check_compression(compression)
    with files.replacing(path, overwrite, DumpError, "write elsewhere with -o") as tmp:
        with _writable(tmp, create=True) as f, _Values(tmp) as out:
            f.attrs["layerdiff_schema"] = SCHEMA
            f.attrs.update(info_attrs(trace.info))
            f.attrs["loss"] = np.nan if trace.loss is None else trace.loss
            _arrays(f.create_group("inputs"), trace.inputs, compression, out)
            if trace.input_names:
                f["inputs"].attrs["names"] = json.dumps(list(trace.input_names))
            _arrays(f.create_group("upstream"), trace.upstream, compression, out)
            if trace.targets is not None:
                _values(f, "targets", trace.targets, None, out)
            layers = f.create_group("layers")
            for i, layer in enumerate(trace.layers):
                signals.checkpoint()  # a Ctrl-C swallowed by a cleanup inside h5py stops the write here
                g = layers.create_group(_group_name(i, layer.name))
                g.attrs.update(name=layer.name, kind=layer.kind, params=json.dumps(layer.params))
                keep = full is None or full(layer.name)
                for key, value in layer.tensors.items():
                    _dataset(g, key, value, compression, layer.layouts.get(key, ""), keep, full is not None, out)
                    if key in layer.placements:
                        g[key].attrs["placement"] = layer.placements[key]
            if trace.regions:
                _regions(f.create_group("regions"), trace.regions)
            params = f.create_group("params")
            for i, p in enumerate(trace.params):
                signals.checkpoint()
                g = params.create_group(_group_name(i, p.name))
                g.attrs.update(name=p.name, layer=p.layer, layout=p.layout)
                if p.gates:
                    g.attrs["gates"] = p.gates
                if p.placement:
                    g.attrs["placement"] = p.placement
                keep = full is None or owned(p, full)
                _dataset(g, "value", p.value, compression, p.layout, keep and values, full is not None or not values, out)
                if p.grad is not None:
                    _dataset(g, "grad", p.grad, compression, p.layout, keep, full is not None, out)
    return path


def _regions(group: h5py.Group, regions: list[RegionRecord]) -> None:
    for i, region in enumerate(regions):
        g = group.create_group(f"{i:04d}")
        g.attrs.update(name=region.name, modules=region.modules, first_op=region.first_op, keys=json.dumps(list(region.tensors)))
        for k, (compiled, eager) in enumerate(region.tensors.values()):
            g.create_dataset(f"{k}.compiled", data=compiled)
            g.create_dataset(f"{k}.eager", data=eager)


def check_compression(compression: str | None) -> None:
    """Raises DumpError for a compression other than ``COMPRESSIONS``."""
    if compression is not None and compression not in COMPRESSIONS:
        raise DumpError(f"{term('compression')} must be one of {', '.join(COMPRESSIONS)}, not '{compression}'.")


def fill(trace: Trace, path: str | os.PathLike[str], full: Callable[[str], bool]) -> None:
    """Store the tensors of the layers ``full`` names (and their parameters' gradients) in a stats-only dump of
    ``trace``: its second pass. Each tensor is marked stored only once it is written whole.

    Raises:
        DumpError: the disk is full (what was stored until then stays marked as such).
    """
    try:
        with _writable(Path(path), create=False) as f:
            groups = [f["layers"][k] for k in sorted(f["layers"], key=_index)]
            for layer, g in zip(trace.layers, groups):
                signals.checkpoint()
                if full(layer.name):
                    for key, value in layer.tensors.items():
                        _store(g[key], value)
            by_name = {p.name: p for p in trace.params}
            for k in sorted(f["params"]):
                g = f["params"][k]
                p = by_name[str(g.attrs["name"])]
                if p.grad is not None and owned(p, full):
                    _store(g["grad"], p.grad)
    except (OSError, RuntimeError) as exc:
        if files.disk_error(exc):
            raise DumpError(files.disk_message(Path(path), exc)) from None
        raise


def update_info(path: str | os.PathLike[str], info: RunInfo) -> None:
    """Rewrite a dump's run attributes: a dump written as the first run ended learns the second run's noise."""
    try:
        with _writable(Path(path), create=False) as f:
            f.attrs.update(info_attrs(info))
    except (OSError, RuntimeError) as exc:
        if files.disk_error(exc):
            raise DumpError(files.disk_message(Path(path), exc)) from None
        raise


def _writable(path: Path, create: bool) -> h5py.File:
    """A file to write, opened so that a full disk is an exception and nothing worse.

    HDF5 keeps small writes in a sieve buffer and writes it when a dataset closes, which h5py does from a
    destructor: a write failing there is printed as "Exception ignored", leaves the dataset open, and HDF5 crashes
    closing it again when the process exits. Without the buffer each write fails where it is made.
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    fapl.set_sieve_buf_size(0)
    name = os.fsencode(path)
    fid = h5py.h5f.create(name, h5py.h5f.ACC_TRUNC, fapl=fapl) if create else h5py.h5f.open(name, h5py.h5f.ACC_RDWR, fapl=fapl)
    return h5py.File(fid)


def _store(ds: h5py.Dataset, value: np.ndarray) -> None:
    if not ds.attrs.get("stored", 1):
        ds.write_direct(np.ascontiguousarray(value))
        ds.attrs["stored"] = 1


def _dataset(
    group: h5py.Group, key: str, value: np.ndarray, compression: str | None, layout: str, keep: bool, stats: bool,
    out: _Values | None = None,
) -> None:
    """One tensor, or (not ``keep``) only its shape, dtype and statistics: HDF5 allocates no storage for a dataset
    never written. ``stats``: the full statistics, for a dump that is (partly) stats-only. ``out``: the thread that
    writes the values (``_Values``); without it they are written here."""
    if keep:
        ds = _values(group, key, value, compression, out)
    else:
        options: dict[str, Any] = {"compression": compression, "shuffle": True} if compression and value.size > 1 else {}
        ds = group.create_dataset(key, shape=value.shape, dtype=value.dtype, **options)
        ds.attrs["stored"] = 0
    info = statistics(value, layout) if stats else summarize(value)  # while ``out`` writes the values
    ds.attrs.update(norm=info.norm, mean=info.mean)
    if stats:  # what a comparison that cannot read the tensor goes by
        ds.attrs.update(sha256=info.sha256, sketch=np.array(info.sketch), finite=info.finite)
    if layout and key != "value" and key != "grad":
        ds.attrs["layout"] = layout


def _arrays(group: h5py.Group, arrays: list[np.ndarray], compression: str | None, out: _Values | None = None) -> None:
    for i, a in enumerate(arrays):
        _values(group, str(i), a, compression, out)


RAW_KINDS = "biufc"  # dtypes whose HDF5 type (as h5py makes it) holds the array's own bytes: bool is an int8 enum


def _values(group: h5py.Group, key: str, value: np.ndarray, compression: str | None, out: _Values | None) -> h5py.Dataset:
    """A dataset holding ``value``: compressed by HDF5; else allocated in the file at once (contiguous, no fill) and
    handed to ``out``, which writes its bytes where HDF5 put them while this thread goes on with the next."""
    value = np.asarray(value)
    if compression is not None and value.size > 1:
        return group.create_dataset(key, data=value, compression=compression, shuffle=True)
    if out is None or value.dtype.kind not in RAW_KINDS:
        return group.create_dataset(key, data=value)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # every byte is written below: zeros first would write it twice
    ds = group.create_dataset(key, shape=value.shape, dtype=value.dtype, dcpl=dcpl)
    offset = ds.id.get_offset()
    if offset is None:  # nothing allocated: no values, or a scalar (h5py allocates those late)
        if value.size:
            ds.write_direct(np.ascontiguousarray(value))
    else:
        out.put(offset, value)
    return ds


class _Values:
    """A thread that writes datasets' values into the file at the offsets HDF5 allocated for them, so that the disk
    (the copy into the page cache) and HDF5's own work for the next datasets (objects, attributes, summaries) run
    at once, on two cores: h5py holds its lock for the whole of a write, and ``os.pwrite`` releases the GIL.

    HDF5 writes none of those bytes itself (no fill) and nothing else of the file until it closes, which is after
    ``__exit__``: that waits for every value, and raises the first error writing them (a full disk) there, if none
    came before at a ``put``. After an error in the writing thread (an interrupt), the values left are dropped.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY)
        self._queue: queue.SimpleQueue[tuple[int, np.ndarray] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="layerdiff-dump-values", daemon=True)
        self._thread.start()

    def put(self, offset: int, value: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((offset, value))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._stop or self._error is not None:
                continue
            offset, value = item
            try:
                data = np.ascontiguousarray(value).reshape(-1).view(np.uint8).data  # a transposed view: copied here
                while data:
                    written = os.pwrite(self._fd, data, offset)
                    data, offset = data[written:], offset + written
            except BaseException as exc:  # said in the writing thread, at the next put or at the end
                self._error = exc

    def __enter__(self) -> _Values:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self._stop = kind is not None
        self._queue.put(None)
        try:
            self._thread.join()
        except BaseException:  # interrupted waiting: the values left are dropped, the one being written finishes
            self._stop = True
            with signals.deferred():  # before its file descriptor is closed (and its number given to another file)
                self._thread.join()
            raise
        finally:
            os.close(self._fd)
        if kind is None and self._error is not None:
            raise self._error


def _index(group_name: str) -> int:
    """Groups are named "0042_fc1": ordered by that number, also past 9999."""
    return int(group_name.split("_", 1)[0])


# A run's information as root attributes and back again, side by side: each is the other's inverse.
NOT_MEASURED = "not measured"  # run_to_run of a side run once (--once)
INFO_FIELDS = tuple(f.name for f in fields(RunInfo) if f.name != "settings")
INT_FIELDS = ("seed", "rank", "world_size")


def info_attrs(info: RunInfo) -> dict[str, Any]:
    """A run's information as the root attributes of its dump: one per field, and the adapter's settings beside them."""
    attrs: dict[str, Any] = {name: getattr(info, name) for name in INFO_FIELDS}
    attrs["run_to_run"] = NOT_MEASURED if info.run_to_run is None else info.run_to_run
    return {**dict(info.settings), **attrs}


def read_info(attrs: dict[str, Any]) -> RunInfo:
    """``info_attrs`` read back; the attributes it does not know are the adapter's settings."""
    known = {name: attrs[name] for name in INFO_FIELDS if name in attrs}
    known["run_to_run"] = attrs.get("run_to_run") if isinstance(attrs.get("run_to_run"), (int, float)) else None
    for name in INFO_FIELDS:
        if name in known and name != "run_to_run":
            known[name] = int(known[name]) if name in INT_FIELDS else str(known[name])
    skip = set(INFO_FIELDS) | {"layerdiff_schema", "loss"}
    settings = {k: str(v) for k, v in attrs.items() if k not in skip}
    return RunInfo(**known, settings=settings)
