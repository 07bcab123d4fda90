"""The HDF5 dump of training steps (``layerdiff run --steps K``): ``store``'s one-iteration schema once per step.
It writes each step with ``store``'s own helpers and reads it through ``store``'s checking walk, as any dump.

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
from layerdiff.records import Trace, owned
from layerdiff.store import SCHEMA, Dump
from layerdiff.store.walk import Walk
from layerdiff.store.writer import _arrays, _dataset, _group_name, check_compression, info_attrs

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
            self.file.attrs.update(info_attrs(trace.info))
        g.attrs.update(info_attrs(trace.info))
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
    walk = Walk(Path(path))
    try:
        root = walk.nodes["/"]
        return f"{walk.text(root, 'mode', '?')}, optimizer {walk.text(root, 'optimizer', '?')}"
    finally:
        walk.close()


def steps_in(path: str | os.PathLike[str]) -> int:
    """How many training steps a dump holds (0: a dump of one iteration).

    Raises:
        DumpError: the file is missing, not a dump, or damaged.
    """
    walk = Walk(Path(path))
    try:
        root = walk.nodes["/"]
        return walk.integer(root, "steps") if "steps" in root.attrs and "/steps" in walk.nodes else 0
    finally:
        walk.close()


class StepDump(Dump):
    """Step ``k`` of a dump of training steps, read as a dump of one iteration; and what the step changed."""

    PARAM_MEMBERS = ("value", "grad", "update")

    def __init__(self, path: str | os.PathLike[str], k: int) -> None:
        count = steps_in(path)
        if not 1 <= k <= count:
            held = "step 1" if count == 1 else f"steps 1 to {count}"
            raise DumpError(f"{path} holds no step {k}: it holds {held}." if count else f"{path} holds no training steps.")
        super().__init__(path, root=f"/steps/{k}")
        self.source = f"{self.path.name} step {k}"

    def update(self, name: str) -> np.ndarray | None:
        w, where = self._walk, f"{self._params[name].path}/update"
        node = w.nodes.get(where)
        return w.read(where) if node is not None and w.flag(node, "stored", True) else None

    def optimizer_state(self) -> dict[str, dict[str, np.ndarray]]:
        w, group = self._walk, f"{self._root}/optimizer"
        state = {}
        for member in w.members(group) if group in w.nodes else []:
            og = w.nodes[f"{group}/{member}"]
            state[w.name(og, "name")] = {e: w.read(f"{og.path}/{e}") for e in w.members(og.path)}
        return state

    def buffers(self) -> dict[str, np.ndarray]:
        w, group = self._walk, f"{self._root}/buffers"
        return {w.name(w.nodes[f"{group}/{m}"], "name"): w.read(f"{group}/{m}") for m in (w.members(group) if group in w.nodes else [])}
