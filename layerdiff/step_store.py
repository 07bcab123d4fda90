"""The HDF5 dump of training steps (``layerdiff run --steps K``): ``store``'s one-iteration schema once per step.
With ``store``, the only module that imports h5py; it writes and reads each step with ``store``'s own helpers.

The file's root holds what the run was (attrs ``layerdiff_schema``, ``steps``, ``mode``, ``optimizer``, and the
first step's run attributes), and ``/steps/k/`` holds step k in ``store``'s schema, its parameters with one more
dataset, ``update`` (w_after - w_before), beside two more groups:

    /steps/k/optimizer/0000_fc1.W/<entry>    the optimizer's state after the step (attrs name); entries as
                                             PyTorch names them: exp_avg, exp_avg_sq, step, momentum_buffer
    /steps/k/buffers/0000_bn2.running_var    the buffers after the step (attrs name, layer)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from layerdiff.errors import DumpError
from layerdiff.records import LayerInfo, Trace, key_order, owned
from layerdiff.store import SCHEMA, Dump, _arrays, _dataset, _group_name, _index, _info, _info_attrs, check_compression

Extras = tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], dict[str, tuple[str, np.ndarray]]]


class StepWriter:
    """One side's dump of training steps, written step by step into one open file (each step dropped from memory
    once written); the caller makes the file whole by renaming it (``files.replacing``)."""

    def __init__(self, path: str | os.PathLike[str], mode: str, optimizer: str, compression: str | None = None) -> None:
        check_compression(compression)
        self.compression = compression
        self.file = h5py.File(path, "w")
        self.file.attrs.update(layerdiff_schema=SCHEMA, steps=0, mode=mode, optimizer=optimizer)
        self.file.create_group("steps")

    def step(
        self,
        k: int,
        trace: Trace,
        extras: Extras,
        full: Callable[[str], bool] | None = None,
        values: bool = True,
    ) -> None:
        """Write step ``k``: ``trace`` as ``write`` would, and ``extras``: the updates, the optimizer's state
        (``{parameter: {entry: array}}``) and the buffers (``{name: (layer, value)}``) after the step."""
        updates, state, buffers = extras
        g = self.file["steps"].create_group(str(k))
        if k == 1:
            self.file.attrs.update(_info_attrs(trace.info))
        g.attrs.update(_info_attrs(trace.info))
        g.attrs["loss"] = np.nan if trace.loss is None else trace.loss
        c = self.compression
        _arrays(g.create_group("inputs"), trace.inputs, c)
        _arrays(g.create_group("upstream"), trace.upstream, c)
        if trace.targets is not None:
            g.create_dataset("targets", data=trace.targets)
        layers = g.create_group("layers")
        for i, layer in enumerate(trace.layers):
            lg = layers.create_group(_group_name(i, layer.name))
            lg.attrs.update(name=layer.name, kind=layer.kind, params=json.dumps(layer.params))
            for key, value in layer.tensors.items():
                _dataset(lg, key, value, c, layer.layouts.get(key, ""), full is None or full(layer.name), full is not None)
        params = g.create_group("params")
        for i, p in enumerate(trace.params):
            pg = params.create_group(_group_name(i, p.name))
            pg.attrs.update(name=p.name, layer=p.layer, layout=p.layout)
            keep = full is None or owned(p, full)
            _dataset(pg, "value", p.value, c, p.layout, keep and values, full is not None or not values)
            for key, extra in (("grad", p.grad), ("update", updates.get(p.name))):
                if extra is not None:
                    _dataset(pg, key, extra, c, p.layout, keep, full is not None)
        optimizer = g.create_group("optimizer")
        for i, (name, entries) in enumerate(state.items()):
            og = optimizer.create_group(_group_name(i, name))
            og.attrs["name"] = name
            for entry, value in entries.items():
                og.create_dataset(entry, data=value)
        held = g.create_group("buffers")
        for i, (name, (owner, buffer)) in enumerate(buffers.items()):
            ds = held.create_dataset(_group_name(i, name), data=buffer)
            ds.attrs.update(name=name, layer=owner)
        self.file.attrs["steps"] = k
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def describe(path: str | os.PathLike[str]) -> str:
    """How the steps were run: ``re-synced, optimizer torch.optim.Adam (lr 0.001)``."""
    with h5py.File(path, "r") as f:
        return f"{f.attrs.get('mode', '?')}, optimizer {f.attrs.get('optimizer', '?')}"


def steps_in(path: str | os.PathLike[str]) -> int:
    """How many training steps a dump holds (0: a dump of one iteration)."""
    with h5py.File(path, "r") as f:
        return int(f.attrs.get("steps", 0)) if "steps" in f else 0


class StepDump(Dump):
    """Step ``k`` of a dump of training steps, read as a dump of one iteration; and what the step changed."""

    def __init__(self, path: str | os.PathLike[str], k: int) -> None:
        self.path = Path(path)
        self.source = f"{self.path.name} step {k}"
        if not self.path.is_file():
            raise DumpError(f"{self.path}: no such file.")
        self._whole = h5py.File(self.path, "r")
        group = self._whole.get(f"steps/{k}")
        if group is None:
            count = int(self._whole.attrs.get("steps", 0))
            self._whole.close()
            held = "step 1" if count == 1 else f"steps 1 to {count}"
            raise DumpError(f"{self.path} holds no step {k}: it holds {held}." if count else f"{self.path} holds no training steps.")
        self.file = group
        self._groups = [group["layers"][n] for n in sorted(group["layers"], key=_index)]
        self.layers = [
            LayerInfo(i, str(lg.attrs["name"]), str(lg.attrs["kind"]), {n: _info(lg[n]) for n in sorted(lg, key=key_order)}, tuple(json.loads(lg.attrs["params"])))
            for i, lg in enumerate(self._groups)
        ]
        self._params = {str(pg.attrs["name"]): pg for pg in (group["params"][n] for n in sorted(group["params"], key=_index))}

    def update(self, name: str) -> np.ndarray | None:
        pg = self._params[name]
        return np.asarray(pg["update"][()]) if "update" in pg and pg["update"].attrs.get("stored", 1) else None

    def optimizer_state(self) -> dict[str, dict[str, np.ndarray]]:
        return {str(og.attrs["name"]): {e: np.asarray(og[e][()]) for e in og} for og in self.file["optimizer"].values()}

    def buffers(self) -> dict[str, np.ndarray]:
        return {str(ds.attrs["name"]): np.asarray(ds[()]) for ds in self.file["buffers"].values()}

    def close(self) -> None:
        self._whole.close()
