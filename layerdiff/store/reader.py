"""``Dump``: a dump as a ``Recording``, read through the checking walk. The schema's rules on what the walk found
(layers, parameters, tensors' statistics) are checked when it opens; values are read when asked for."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from layerdiff.errors import DumpError
from layerdiff.layout import axes_of, canonical, canonical_shape
from layerdiff.records import LayerInfo, LayerRecord, ParamRecord, RegionRecord, RunInfo, Trace, key_order, placeholder
from layerdiff.stats import TensorInfo, all_finite, digest, fingerprint
from layerdiff.store.walk import ADVICE, Node, Walk, shown
from layerdiff.store.writer import read_info

READS = (1, 2)  # schema 2 added stats-only tensors (attrs stored, sha256, sketch, finite); 1 is 2 with every tensor stored
TENSOR_KEY = re.compile(r"(input|output|grad_output|grad_input)(\.[1-9][0-9]*)?")


class Dump:
    """A dump opened for reading; tensors are read one at a time, when asked for.

    Raises:
        DumpError: the file is missing, not a dump, of another schema, damaged or reaching outside itself.
    """

    PARAM_MEMBERS: tuple[str, ...] = ("value", "grad")  # the datasets a parameter's group may hold

    def __init__(self, path: str | os.PathLike[str], root: str = "") -> None:
        """``root``: the group that holds the iteration (``/steps/3`` in a dump of training steps); the file's own
        root by default."""
        self.path = Path(path)
        self._root = root
        self.source = self.path.name
        self._walk = Walk(self.path)
        self.file = self._walk.file  # public before the split: raw h5py access for whoever used it
        try:
            self._open()
        except BaseException:
            self._walk.close()
            raise

    def _open(self) -> None:
        w, r = self._walk, self._root
        root = w.nodes["/"]
        schema = root.attrs.get("layerdiff_schema")
        if schema is None or f"{r}/layers" not in w.nodes or f"{r}/params" not in w.nodes:
            raise DumpError(f"{self.path} is an HDF5 file but not a layerdiff dump (no layerdiff_schema attribute).")
        version = w.integer(root, "layerdiff_schema")
        if version not in READS:
            raise DumpError(
                f"{self.path} has dump schema {version}; this layerdiff reads schemas {', '.join(map(str, READS))}. "
                "Write it again with this version's `layerdiff dump`."
            )
        self._meta = w.meta(r or "/")
        self._loss = w.number(w.nodes[r or "/"], "loss")
        self._groups = w.ordered(f"{r}/layers")
        self.layers = [self._layer(i, g) for i, g in enumerate(self._groups)]
        self._params: dict[str, Node] = {}
        for g in w.ordered(f"{r}/params"):
            name = self._param(g)
            if name in self._params:
                raise w.damaged(f"names parameter {shown(name)} twice", g.path)
            self._params[name] = g
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise w.damaged(f"has two layers named {shown(twice)}", f"{r}/layers")
        for layer, g in zip(self.layers, self._groups):
            for p in layer.params:
                if p not in self._params:
                    raise w.damaged(f"names parameter {shown(p)}, which {r}/params does not hold", g.path)
        self._arrays_of = {group: self._array_paths(f"{r}/{group}") for group in ("inputs", "upstream")}
        targets = w.nodes.get(f"{r}/targets")
        if targets is not None and targets.members is not None:
            raise w.damaged("is a group, not a dataset", targets.path)
        self._targets = None if targets is None else targets.path

    # --- the schema, on what the walk found -----------------------------------------------------------------

    def _layer(self, index: int, g: Node) -> LayerInfo:
        w = self._walk
        name = w.name(g, "name")
        kind = w.text(g, "kind")
        try:
            params = json.loads(w.text(g, "params"))
        except ValueError:
            params = None
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise w.damaged(f"attribute 'params' is {shown(g.attrs.get('params'))}, not a JSON list of names", g.path)
        tensors = {}
        for key in sorted(w.members(g.path), key=_tensor_order):
            node = w.nodes[f"{g.path}/{key}"]
            if not TENSOR_KEY.fullmatch(key):
                raise w.damaged("is not a tensor a layer records (input, output, grad_output, grad_input)", node.path)
            tensors[key] = self._info(node)
        if not tensors:
            raise w.damaged("holds no tensors", g.path)
        return LayerInfo(index, name, kind, tensors, tuple(params))

    def _info(self, node: Node) -> TensorInfo:
        w = self._walk
        if node.members is not None:
            raise w.damaged("is a group, not a dataset", node.path)
        layout = w.text(node, "layout", "")
        axes = axes_of(layout)
        if len(set(axes)) != len(axes) or not all(a.isidentifier() for a in axes):
            raise w.damaged(f"attribute 'layout' is {shown(layout)}, not a list of axis names", node.path)
        norm, mean = w.number(node, "norm"), w.number(node, "mean")
        if not norm >= 0:
            raise w.damaged(f"attribute 'norm' is {shown(norm)}, not a norm", node.path)
        sketch = w.plain(node.attrs["sketch"], f"{node.path} attribute 'sketch'") if "sketch" in node.attrs else []
        if not isinstance(sketch, list) or len(sketch) not in (0, 2) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in sketch):
            raise w.damaged(f"attribute 'sketch' is {shown(sketch)}, not two numbers", node.path)
        stored = w.flag(node, "stored", True)
        finite = w.flag(node, "finite", True) if "finite" in node.attrs else None
        sha256 = w.text(node, "sha256", "")
        if not stored and (len(sketch) != 2 or not sha256 or finite is None):
            raise w.damaged("keeps no values and not the statistics that stand for them", node.path)
        return TensorInfo(canonical_shape(node.shape, layout), str(node.dtype), norm, mean, layout, stored, sha256,
                          tuple(float(x) for x in sketch), finite)

    def _param(self, g: Node) -> str:
        w = self._walk
        name = w.name(g, "name")
        w.text(g, "layer")
        w.text(g, "layout")
        members = w.members(g.path)
        if "value" not in members:
            raise w.damaged("has no dataset 'value'", g.path)
        extra = [m for m in members if m not in self.PARAM_MEMBERS]
        if extra:
            raise w.damaged(f"holds {shown(extra[0])}, which a parameter never does", g.path)
        for key in members:
            node = w.nodes[f"{g.path}/{key}"]
            if node.members is not None:
                raise w.damaged("is a group, not a dataset", node.path)
            w.flag(node, "stored", True)
        # A gradient of another shape than its value is kept as the side gave it: the comparison says it is misshapen.
        if "grad" in members:
            self._info(w.nodes[f"{g.path}/grad"])
        return name

    def _array_paths(self, group: str) -> list[str]:
        w = self._walk
        if group not in w.nodes:
            return []
        members = w.members(group)
        if sorted(members, key=lambda m: (len(m), m)) != [str(i) for i in range(len(members))]:
            raise w.damaged(f"holds {shown(members)}, not datasets named 0, 1, 2…", group)
        paths = [f"{group}/{i}" for i in range(len(members))]
        for p in paths:
            if w.nodes[p].members is not None:
                raise w.damaged("is a group, not a dataset", p)
        return paths

    # --- the Recording ------------------------------------------------------------------------------------------

    @property
    def info(self) -> RunInfo:
        return read_info(self._meta)

    @property
    def loss(self) -> float | None:
        return None if np.isnan(self._loss) else self._loss

    def tensor(self, index: int, key: str) -> np.ndarray:
        info = self.layers[index].tensors[key]
        if not info.stored:
            raise DumpError(
                f"{self.path} holds statistics only for layer '{self.layers[index].name}' {key} (a --stats-only dump). "
                "Run again without --stats-only, or with --layers naming it, to keep its values."
            )
        return canonical(self._walk.read(f"{self._groups[index].path}/{key}"), info.layout)

    def param_names(self) -> list[str]:
        return list(self._params)

    def finite(self, index: int, key: str) -> bool:
        noted = self.layers[index].tensors[key].finite
        return all_finite(self.tensor(index, key)) if noted is None else noted

    def param(self, name: str) -> ParamRecord:
        w, g = self._walk, self._params[name]
        if not w.flag(w.nodes[f"{g.path}/value"], "stored", True):
            raise DumpError(
                f"{self.path} holds no value of parameter '{name}', only its hash (written with --skip-copied-weights "
                "or --stats-only): take the weights from the dump of the other side, or write it again without them."
            )
        value = w.read(f"{g.path}/value")
        placement, gates = w.text(g, "placement", ""), w.text(g, "gates", "")
        return ParamRecord(name, w.text(g, "layer"), w.text(g, "layout"), value, self.param_grad(name), placement, gates)

    def spec(self, name: str) -> ParamRecord:
        w, g = self._walk, self._params[name]
        node = w.nodes[f"{g.path}/value"]
        return ParamRecord(name, w.text(g, "layer"), w.text(g, "layout"), placeholder(node.shape, node.dtype),
                           gates=w.text(g, "gates", ""))

    def param_grad(self, name: str) -> np.ndarray | None:
        w, g = self._walk, self._params[name]
        if f"{g.path}/grad" not in w.nodes:
            return None
        if not w.flag(w.nodes[f"{g.path}/grad"], "stored", True):
            raise DumpError(f"{self.path} holds statistics only for the gradient of parameter '{name}' (a --stats-only dump).")
        return w.read(f"{g.path}/grad")

    def param_info(self, name: str) -> TensorInfo | None:
        w, g = self._walk, self._params[name]
        if f"{g.path}/grad" not in w.nodes:
            return None
        layout = w.text(g, "layout")  # statistics are of the gradient in PyTorch's order, as a layer's are
        node = w.nodes[f"{g.path}/grad"]
        return replace(self._info(node), shape=canonical_shape(node.shape, layout), layout=layout)

    def params(self) -> Iterator[ParamRecord]:
        """Every parameter, values read; once all are, they are checked against the recorded ``weights_sha256``.

        Raises:
            DumpError: a value is not stored, or the values do not hash to ``weights_sha256``.
        """
        read = [self.param(n) for n in self._params]
        recorded = self._meta.get("weights_sha256")
        if recorded and fingerprint((p.value, p.layout) for p in read) != recorded:
            raise self._tampered("parameter values", "weights_sha256", " (or holds only some layers' weights: one written with --layers cannot give weights)")
        return iter(read)

    def arrays(self, group: str) -> list[np.ndarray]:
        """``inputs`` or ``upstream``, checked: finite inputs that hash to the recorded ``inputs_sha256``, an
        upstream gradient that hashes to ``upstream_sha256``.

        Raises:
            DumpError: they do not.
        """
        values = [self._walk.read(p) for p in self._arrays_of.get(group, [])]
        if group == "inputs":
            bad = next((i for i, v in enumerate(values) if not all_finite(v)), None)
            if bad is not None:
                raise self._walk.damaged("holds NaN or infinite inputs, which no comparison can judge", self._arrays_of["inputs"][bad])
            recorded = self._meta.get("inputs_sha256")
            if recorded and digest(values) != recorded:
                raise self._tampered("inputs", "inputs_sha256")
        upstream = str(self._meta.get("upstream_sha256", ""))
        if group == "upstream" and upstream.startswith("random:") and "random:" + digest(values) != upstream:
            raise self._tampered("upstream gradients", "upstream_sha256")
        return values

    @property
    def targets(self) -> np.ndarray | None:
        value = None if self._targets is None else self._walk.read(self._targets)
        upstream = str(self._meta.get("upstream_sha256", ""))
        if upstream.startswith("loss:") and "loss:" + digest([value] if value is not None else []) != upstream:
            raise self._tampered("targets", "upstream_sha256")
        return value

    def _tampered(self, what: str, key: str, also: str = "") -> DumpError:
        return DumpError(
            f"{self.path}: its {what} do not hash to the {key} it records: the dump was changed after it was "
            f"written{also}. {ADVICE}"
        )

    def regions(self) -> list[RegionRecord]:
        """A compiled side's regions against its eager module tree, as recorded."""
        w, r = self._walk, self._root
        if f"{r}/regions" not in w.nodes:
            return []
        found = []
        for name in sorted(w.members(f"{r}/regions")):
            g = w.nodes[f"{r}/regions/{name}"]
            keys = w.plain(w.attr(g, "keys"), f"{g.path} attribute 'keys'")
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise w.damaged(f"attribute 'keys' is {shown(keys)}, not a JSON list of names", g.path)
            tensors = {key: (w.read(f"{g.path}/{k}.compiled"), w.read(f"{g.path}/{k}.eager")) for k, key in enumerate(keys)}
            found.append(RegionRecord(w.text(g, "name"), w.text(g, "modules"), tensors, w.text(g, "first_op")))
        return found

    def placements(self, index: int) -> dict[str, str]:
        """How each tensor of a layer is spread over the ranks, where the rank's recording said (a sharded run)."""
        w, g = self._walk, self._groups[index]
        tensors = {k: w.nodes[f"{g.path}/{k}"] for k in w.members(g.path)}
        return {k: w.text(node, "placement") for k, node in tensors.items() if "placement" in node.attrs}

    def trace(self) -> Trace:
        """Everything in memory (small dumps, tests), every tensor in PyTorch's order."""
        layers = [
            LayerRecord(info.name, info.kind, {k: self.tensor(info.index, k) for k in info.tensors}, list(info.params),
                        placements=self.placements(info.index))
            for info in self.layers
        ]
        trace = Trace(layers, list(self.params()), self.loss, self.info, self.arrays("inputs"), self.targets, self.arrays("upstream"))
        trace.regions = self.regions()
        inputs = self._walk.nodes.get(f"{self._root}/inputs")
        if inputs is not None and "names" in inputs.attrs:
            names = self._walk.plain(inputs.attrs["names"], f"{inputs.path} attribute 'names'")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise self._walk.damaged(f"attribute 'names' is {shown(names)}, not a JSON list of names", inputs.path)
            trace.input_names = tuple(names)
        return trace

    def close(self) -> None:
        self._walk.close()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tensor_order(key: str) -> tuple[int, int, str]:
    """``records.key_order`` for the keys a dump may hold, any other last (and refused)."""
    return (*key_order(key), key) if TENSOR_KEY.fullmatch(key) else (99, 0, key)
