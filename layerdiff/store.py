"""The HDF5 dump: the only module that touches h5py.

Schema 1, one file per side, readable with plain h5py or ``h5ls -r``::

    /                     attrs: layerdiff_schema, layerdiff_version, framework, framework_version, dtype, seed,
                                 script, script_sha256, weights_sha256, inputs_sha256, upstream_sha256, loss, …
    /inputs/0, 1…         the inputs both sides received
    /targets              the targets, when the model has a loss
    /upstream/0, 1…       the seeded gradient on each output, when it has none
    /layers/0000_fc1      one group per layer call, in execution order; attrs name, kind, params
        output, input, grad_output, grad_input (and .1, .2… for more)   datasets; attrs norm, mean, and layout
                          (``"N H W C"``) where the axes are not in PyTorch's order
    /params/0000_fc1.W    attrs name, layer, layout; datasets value, grad

Data only: no pickled objects, so opening a dump never runs code. A dump is written to a temporary file beside
its destination and renamed when whole; an existing dump is only replaced when asked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from layerdiff import files
from layerdiff.errors import DumpError
from layerdiff.records import (
    LayerInfo,
    LayerRecord,
    ParamRecord,
    TensorInfo,
    Trace,
    canonical,
    canonical_shape,
    key_order,
    placeholder,
    summarize,
)

SCHEMA = 1


def _group_name(index: int, name: str) -> str:
    return f"{index:04d}_{name.replace('/', '|')}"


def write(trace: Trace, path: str | os.PathLike[str], overwrite: bool = False, compression: str | None = None) -> Path:
    """Write ``trace`` to ``path`` atomically.

    Raises:
        DumpError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    with files.replacing(path, overwrite, DumpError, "write elsewhere with -o") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["layerdiff_schema"] = SCHEMA
            for k, v in trace.meta.items():
                f.attrs[k] = json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v)
            f.attrs["loss"] = np.nan if trace.loss is None else trace.loss
            _arrays(f.create_group("inputs"), trace.inputs, compression)
            _arrays(f.create_group("upstream"), trace.upstream, compression)
            if trace.targets is not None:
                f.create_dataset("targets", data=trace.targets)
            layers = f.create_group("layers")
            for i, layer in enumerate(trace.layers):
                g = layers.create_group(_group_name(i, layer.name))
                g.attrs.update(name=layer.name, kind=layer.kind, params=json.dumps(layer.params))
                for key, value in layer.tensors.items():
                    _dataset(g, key, value, compression, layer.layouts.get(key, ""))
            params = f.create_group("params")
            for i, p in enumerate(trace.params):
                g = params.create_group(_group_name(i, p.name))
                g.attrs.update(name=p.name, layer=p.layer, layout=p.layout)
                _dataset(g, "value", p.value, compression)
                if p.grad is not None:
                    _dataset(g, "grad", p.grad, compression)
    return path


def _dataset(group: h5py.Group, key: str, value: np.ndarray, compression: str | None, layout: str = "") -> None:
    info = summarize(value)
    ds = group.create_dataset(key, data=value, compression=compression if value.size > 1 else None)
    ds.attrs.update(norm=info.norm, mean=info.mean)
    if layout:
        ds.attrs["layout"] = layout


def _arrays(group: h5py.Group, arrays: list[np.ndarray], compression: str | None) -> None:
    for i, a in enumerate(arrays):
        group.create_dataset(str(i), data=a, compression=compression if a.size > 1 else None)


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
        if schema is None or "layers" not in self.file:
            self.file.close()
            raise DumpError(f"{self.path} is an HDF5 file but not a layerdiff dump (no layerdiff_schema attribute).")
        if int(schema) != SCHEMA:
            self.file.close()
            raise DumpError(
                f"{self.path} has dump schema {int(schema)}; this layerdiff reads schema {SCHEMA}. "
                "Write it again with this version's `layerdiff dump`."
            )
        self._groups = [self.file["layers"][k] for k in sorted(self.file["layers"])]
        self.layers = [
            LayerInfo(
                i,
                str(g.attrs["name"]),
                str(g.attrs["kind"]),
                {
                    k: TensorInfo(
                        canonical_shape(tuple(g[k].shape), _layout(g[k])),
                        str(g[k].dtype),
                        float(g[k].attrs["norm"]),
                        float(g[k].attrs["mean"]),
                        _layout(g[k]),
                    )
                    for k in sorted(g, key=key_order)
                },
                tuple(json.loads(g.attrs["params"])),
            )
            for i, g in enumerate(self._groups)
        ]
        self._params = {str(g.attrs["name"]): g for g in (self.file["params"][k] for k in sorted(self.file["params"]))}

    @property
    def meta(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.file.attrs.items()}

    @property
    def loss(self) -> float | None:
        value = float(self.file.attrs["loss"])
        return None if np.isnan(value) else value

    def tensor(self, index: int, key: str) -> np.ndarray:
        data = self._groups[index][key]
        return canonical(np.asarray(data[()]), _layout(data))

    def param_names(self) -> list[str]:
        return list(self._params)

    def param(self, name: str) -> ParamRecord:
        g = self._params[name]
        return ParamRecord(name, str(g.attrs["layer"]), str(g.attrs["layout"]), np.asarray(g["value"][()]), self.param_grad(name))

    def spec(self, name: str) -> ParamRecord:
        g = self._params[name]
        value = placeholder(tuple(g["value"].shape), g["value"].dtype)
        return ParamRecord(name, str(g.attrs["layer"]), str(g.attrs["layout"]), value)

    def param_grad(self, name: str) -> np.ndarray | None:
        g = self._params[name]
        return np.asarray(g["grad"][()]) if "grad" in g else None

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
        return Trace(layers, list(self.params()), self.loss, self.meta, self.arrays("inputs"), self.targets, self.arrays("upstream"))

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _layout(data: h5py.Dataset) -> str:
    return str(data.attrs.get("layout", ""))


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


def is_dump(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like HDF5 (by its signature), so that the CLI can tell dumps from scripts."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False
