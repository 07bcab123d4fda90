"""The HDF5 dump: the only module that touches h5py.

Schema 2, one file per side, readable with plain h5py or ``h5ls -r``::

    /                     attrs: layerdiff_schema, layerdiff_version, framework, framework_version, dtype, seed,
                                 script, script_sha256, weights_sha256, inputs_sha256, upstream_sha256, loss, …
    /inputs/0, 1…         the inputs both sides received
    /targets              the targets, when the model has a loss
    /upstream/0, 1…       the seeded gradient on each output, when it has none
    /layers/0000_fc1      one group per layer call, in execution order; attrs name, kind, params
        output, input, grad_output, grad_input (and .1, .2… for more)   datasets; attrs norm, mean, and layout
                          (``"N H W C"``) where the axes are not in PyTorch's order
    /params/0000_fc1.W    attrs name, layer, layout; datasets value, grad

A tensor a stats-only dump (``--stats-only``, ``--skip-copied-weights``) does not keep is a dataset with its shape
and dtype but no storage, and attrs stored=0, sha256, sketch and finite (``records.statistics``); schema 1 is
schema 2 with every tensor stored, and is read as well.

Data only: no pickled objects, so opening a dump never runs code. A dump is written to a temporary file beside
its destination and renamed when whole; an existing dump is only replaced when asked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from dataclasses import fields, replace
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from layerdiff import files
from layerdiff.errors import DumpError, term
from layerdiff.layout import canonical, canonical_shape
from layerdiff.stats import TensorInfo, all_finite, statistics, summarize
from layerdiff.records import (
    LayerInfo,
    LayerRecord,
    ParamRecord,
    RunInfo,
    Trace,
    key_order,
    owned,
    placeholder,
)

SCHEMA = 2
READS = (1, 2)  # schema 2 added stats-only tensors (attrs stored, sha256, sketch, finite); 1 is 2 with every tensor stored


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
        DumpError: ``path`` exists and ``overwrite`` is false, or an unknown compression.
    """
    path = Path(path)
    check_compression(compression)
    with files.replacing(path, overwrite, DumpError, "write elsewhere with -o") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["layerdiff_schema"] = SCHEMA
            f.attrs.update(_info_attrs(trace.info))
            f.attrs["loss"] = np.nan if trace.loss is None else trace.loss
            _arrays(f.create_group("inputs"), trace.inputs, compression)
            if trace.input_names:
                f["inputs"].attrs["names"] = json.dumps(list(trace.input_names))
            _arrays(f.create_group("upstream"), trace.upstream, compression)
            if trace.targets is not None:
                f.create_dataset("targets", data=trace.targets)
            layers = f.create_group("layers")
            for i, layer in enumerate(trace.layers):
                g = layers.create_group(_group_name(i, layer.name))
                g.attrs.update(name=layer.name, kind=layer.kind, params=json.dumps(layer.params))
                keep = full is None or full(layer.name)
                for key, value in layer.tensors.items():
                    _dataset(g, key, value, compression, layer.layouts.get(key, ""), keep, full is not None)
            params = f.create_group("params")
            for i, p in enumerate(trace.params):
                g = params.create_group(_group_name(i, p.name))
                g.attrs.update(name=p.name, layer=p.layer, layout=p.layout)
                if p.gates:
                    g.attrs["gates"] = p.gates
                keep = full is None or owned(p, full)
                _dataset(g, "value", p.value, compression, p.layout, keep and values, full is not None or not values)
                if p.grad is not None:
                    _dataset(g, "grad", p.grad, compression, p.layout, keep, full is not None)
    return path


def check_compression(compression: str | None) -> None:
    """Raises DumpError for a compression other than ``COMPRESSIONS``."""
    if compression is not None and compression not in COMPRESSIONS:
        raise DumpError(f"{term('compression')} must be one of {', '.join(COMPRESSIONS)}, not '{compression}'.")


def fill(trace: Trace, path: str | os.PathLike[str], full: Callable[[str], bool]) -> None:
    """Store the tensors of the layers ``full`` names (and their parameters' gradients) in a stats-only dump of
    ``trace``: its second pass. Each tensor is marked stored only once it is written whole."""
    with h5py.File(path, "r+") as f:
        groups = [f["layers"][k] for k in sorted(f["layers"])]
        for layer, g in zip(trace.layers, groups):
            if full(layer.name):
                for key, value in layer.tensors.items():
                    _store(g[key], value)
        by_name = {p.name: p for p in trace.params}
        for k in sorted(f["params"]):
            g = f["params"][k]
            p = by_name[str(g.attrs["name"])]
            if p.grad is not None and owned(p, full):
                _store(g["grad"], p.grad)


def _store(ds: h5py.Dataset, value: np.ndarray) -> None:
    if not ds.attrs.get("stored", 1):
        ds.write_direct(np.ascontiguousarray(value))
        ds.attrs["stored"] = 1


def _dataset(
    group: h5py.Group, key: str, value: np.ndarray, compression: str | None, layout: str, keep: bool, stats: bool
) -> None:
    """One tensor, or (not ``keep``) only its shape, dtype and statistics: HDF5 allocates no storage for a dataset
    never written. ``stats``: the full statistics, for a dump that is (partly) stats-only."""
    info = statistics(value, layout) if stats else summarize(value)
    options: dict[str, Any] = {}
    if compression is not None and value.size > 1:
        options = {"compression": compression, "shuffle": True}
    if keep:
        ds = group.create_dataset(key, data=value, **options)
    else:
        ds = group.create_dataset(key, shape=value.shape, dtype=value.dtype, **options)
        ds.attrs["stored"] = 0
    ds.attrs.update(norm=info.norm, mean=info.mean)
    if stats:  # what a comparison that cannot read the tensor goes by
        ds.attrs.update(sha256=info.sha256, sketch=np.array(info.sketch), finite=info.finite)
    if layout and key != "value" and key != "grad":
        ds.attrs["layout"] = layout


def _arrays(group: h5py.Group, arrays: list[np.ndarray], compression: str | None) -> None:
    for i, a in enumerate(arrays):
        options: dict[str, Any] = {"compression": compression, "shuffle": True} if compression and a.size > 1 else {}
        group.create_dataset(str(i), data=a, **options)


def _info(data: h5py.Dataset) -> TensorInfo:
    attrs = dict(data.attrs)  # one read of them all: a dump of a large model has thousands
    layout = str(attrs.get("layout", ""))
    return TensorInfo(
        canonical_shape(tuple(data.shape), layout),
        str(data.dtype),
        float(attrs["norm"]),
        float(attrs["mean"]),
        layout,
        bool(attrs.get("stored", 1)),
        str(attrs.get("sha256", "")),
        tuple(float(x) for x in attrs.get("sketch", ())),
        None if "finite" not in attrs else bool(attrs["finite"]),
    )


class Dump:
    """A dump opened for reading; tensors are read one at a time, when asked for."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.source = self.path.name
        if not self.path.is_file():
            raise DumpError(f"{self.path}: no such file.")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError:
            raise DumpError(
                f"{self.path} is not an HDF5 file. Give a dump written by `layerdiff dump` or `layerdiff run`."
            ) from None
        schema = self.file.attrs.get("layerdiff_schema")
        if schema is None or "layers" not in self.file or "params" not in self.file:
            self.file.close()
            raise DumpError(f"{self.path} is an HDF5 file but not a layerdiff dump (no layerdiff_schema attribute).")
        if int(schema) not in READS:
            self.file.close()
            raise DumpError(
                f"{self.path} has dump schema {int(schema)}; this layerdiff reads schemas {', '.join(map(str, READS))}. "
                "Write it again with this version's `layerdiff dump`."
            )
        try:
            self._groups = [self.file["layers"][k] for k in sorted(self.file["layers"], key=_index)]
            self.layers = [
                LayerInfo(
                    i,
                    str(g.attrs["name"]),
                    str(g.attrs["kind"]),
                    {k: _info(g[k]) for k in sorted(g, key=key_order)},
                    tuple(json.loads(g.attrs["params"])),
                )
                for i, g in enumerate(self._groups)
            ]
            self._params = {str(g.attrs["name"]): g for g in (self.file["params"][k] for k in sorted(self.file["params"], key=_index))}
        except (KeyError, ValueError) as exc:
            self.file.close()
            raise DumpError(f"{self.path} is a damaged layerdiff dump ({exc}). Write it again with `layerdiff dump`.") from None

    @property
    def info(self) -> RunInfo:
        return _read_info({k: _plain(v) for k, v in self.file.attrs.items()})

    @property
    def loss(self) -> float | None:
        value = float(self.file.attrs["loss"])
        return None if np.isnan(value) else value

    def tensor(self, index: int, key: str) -> np.ndarray:
        data = self._groups[index][key]
        if not data.attrs.get("stored", 1):
            raise DumpError(
                f"{self.path} holds statistics only for layer '{self.layers[index].name}' {key} (a --stats-only dump). "
                "Run again without --stats-only, or with --layers naming it, to keep its values."
            )
        return canonical(np.asarray(data[()]), _layout(data))

    def param_names(self) -> list[str]:
        return list(self._params)

    def finite(self, index: int, key: str) -> bool:
        noted = self.layers[index].tensors[key].finite
        return all_finite(self.tensor(index, key)) if noted is None else noted

    def param(self, name: str) -> ParamRecord:
        g = self._params[name]
        if not g["value"].attrs.get("stored", 1):
            raise DumpError(
                f"{self.path} holds no value of parameter '{name}', only its hash (written with --skip-copied-weights "
                "or --stats-only): take the weights from the dump of the other side, or write it again without them."
            )
        record = ParamRecord(name, str(g.attrs["layer"]), str(g.attrs["layout"]), np.asarray(g["value"][()]), self.param_grad(name))
        record.gates = str(g.attrs.get("gates", ""))
        return record

    def spec(self, name: str) -> ParamRecord:
        g = self._params[name]
        value = placeholder(tuple(g["value"].shape), g["value"].dtype)
        return ParamRecord(name, str(g.attrs["layer"]), str(g.attrs["layout"]), value, gates=str(g.attrs.get("gates", "")))

    def param_grad(self, name: str) -> np.ndarray | None:
        g = self._params[name]
        if "grad" not in g:
            return None
        if not g["grad"].attrs.get("stored", 1):
            raise DumpError(f"{self.path} holds statistics only for the gradient of parameter '{name}' (a --stats-only dump).")
        return np.asarray(g["grad"][()])

    def param_info(self, name: str) -> TensorInfo | None:
        g = self._params[name]
        if "grad" not in g:
            return None
        layout = str(g.attrs["layout"])  # statistics are of the gradient in PyTorch's order, as a layer's are
        return replace(_info(g["grad"]), shape=canonical_shape(tuple(g["grad"].shape), layout), layout=layout)

    def params(self) -> Iterator[ParamRecord]:
        return (self.param(n) for n in self._params)

    def arrays(self, group: str) -> list[np.ndarray]:
        if group not in self.file:
            return []
        return [np.asarray(self.file[group][k][()]) for k in sorted(self.file[group], key=int)]

    @property
    def targets(self) -> np.ndarray | None:
        return np.asarray(self.file["targets"][()]) if "targets" in self.file else None

    def trace(self) -> Trace:
        """Everything in memory (small dumps, tests), every tensor in PyTorch's order."""
        layers = [
            LayerRecord(info.name, info.kind, {k: self.tensor(info.index, k) for k in info.tensors}, list(info.params))
            for info in self.layers
        ]
        trace = Trace(layers, list(self.params()), self.loss, self.info, self.arrays("inputs"), self.targets, self.arrays("upstream"))
        if "inputs" in self.file and "names" in self.file["inputs"].attrs:
            trace.input_names = tuple(json.loads(self.file["inputs"].attrs["names"]))
        return trace

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _layout(data: h5py.Dataset) -> str:
    return str(data.attrs.get("layout", ""))


def _index(group_name: str) -> int:
    """Groups are named "0042_fc1": ordered by that number, also past 9999."""
    return int(group_name.split("_", 1)[0])


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            pass
    return v


NOT_MEASURED = "not measured"  # run_to_run of a side run once (--once)
INFO_FIELDS = tuple(f.name for f in fields(RunInfo) if f.name != "settings")


def _info_attrs(info: RunInfo) -> dict[str, Any]:
    """A run's information as the root attributes of its dump: one per field, and the adapter's settings beside them."""
    attrs: dict[str, Any] = {name: getattr(info, name) for name in INFO_FIELDS}
    attrs["run_to_run"] = NOT_MEASURED if info.run_to_run is None else info.run_to_run
    return {**dict(info.settings), **attrs}


def _read_info(attrs: dict[str, Any]) -> RunInfo:
    """``_info_attrs`` read back; the attributes it does not know are the adapter's settings."""
    known = {name: attrs[name] for name in INFO_FIELDS if name in attrs}
    known["run_to_run"] = attrs.get("run_to_run") if isinstance(attrs.get("run_to_run"), (int, float)) else None
    if "seed" in known:
        known["seed"] = int(known["seed"])
    for name in INFO_FIELDS:
        if name in known and name not in ("seed", "run_to_run"):
            known[name] = str(known[name])
    skip = set(INFO_FIELDS) | {"layerdiff_schema", "loss"}
    settings = {k: str(v) for k, v in attrs.items() if k not in skip}
    return RunInfo(**known, settings=settings)


def is_dump(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like HDF5 (by its signature), so that the CLI can tell dumps from scripts."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False
