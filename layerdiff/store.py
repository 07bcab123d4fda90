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

A dump is data from someone else, and ``Dump`` reads nothing of it unchecked. Opening one walks every link and
reads every attribute first: a link that leaves the file (external, soft or user-defined), a dataset whose values
live in another file (external storage, virtual datasets), a filter layerdiff never writes (HDF5 would load a
plugin for it), a dataset that claims more values than its storage can hold, and anything out of the schema are
refused on one line, naming where, before any value is read. Values are read one dataset at a time through one
method, where whatever HDF5 raises for damaged data is said as such; inputs, upstream gradient and weights are
checked against the hashes the dump records when they are read to run a model on.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from layerdiff import files, signals
from layerdiff.errors import DumpError, term
from layerdiff.layout import axes_of, canonical, canonical_shape
from layerdiff.stats import TensorInfo, all_finite, digest, fingerprint, statistics, summarize
from layerdiff.records import (
    LayerInfo,
    LayerRecord,
    ParamRecord,
    RegionRecord,
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
        DumpError: ``path`` exists and ``overwrite`` is false, an unknown compression, or the disk is full.
    """
    path = Path(path)
    check_compression(compression)
    with files.replacing(path, overwrite, DumpError, "write elsewhere with -o") as tmp:
        with _writable(tmp, create=True) as f:
            f.attrs["layerdiff_schema"] = SCHEMA
            f.attrs.update(_info_attrs(trace.info))
            f.attrs["loss"] = np.nan if trace.loss is None else trace.loss
            _arrays(f.create_group("inputs"), trace.inputs, compression)
            _arrays(f.create_group("upstream"), trace.upstream, compression)
            if trace.targets is not None:
                f.create_dataset("targets", data=trace.targets)
            layers = f.create_group("layers")
            for i, layer in enumerate(trace.layers):
                signals.checkpoint()  # a Ctrl-C swallowed by a cleanup inside h5py stops the write here
                g = layers.create_group(_group_name(i, layer.name))
                g.attrs.update(name=layer.name, kind=layer.kind, params=json.dumps(layer.params))
                keep = full is None or full(layer.name)
                for key, value in layer.tensors.items():
                    _dataset(g, key, value, compression, layer.layouts.get(key, ""), keep, full is not None)
                    if key in layer.placements:
                        g[key].attrs["placement"] = layer.placements[key]
            if trace.regions:
                _regions(f.create_group("regions"), trace.regions)
            params = f.create_group("params")
            for i, p in enumerate(trace.params):
                signals.checkpoint()
                g = params.create_group(_group_name(i, p.name))
                g.attrs.update(name=p.name, layer=p.layer, layout=p.layout)
                if p.placement:
                    g.attrs["placement"] = p.placement
                keep = full is None or owned(p, full)
                _dataset(g, "value", p.value, compression, p.layout, keep and values, full is not None or not values)
                if p.grad is not None:
                    _dataset(g, "grad", p.grad, compression, p.layout, keep, full is not None)
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


# --- Reading: what a dump may hold. Anything else is refused before a value is read. -----------------------------

NUMERIC = "biufc"
LZF = 32000  # h5py's own filter, registered by h5py itself: no plugin is loaded for it
FILTERS = {h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32, LZF}
# Deflate's best ratio is about 1032:1 (a run of zeros), so no dataset holds more values per byte of storage than
# that; one that claims to is refused before HDF5 allocates its values.
MAX_RATIO = 1100
MAX_UNSTORED = 1 << 40  # entries a stats-only dataset may declare (only its shape is ever used)
MAX_DEPTH = 3  # / layers 0000_fc1 output
TENSOR_KEY = re.compile(r"(input|output|grad_output|grad_input)(\.[1-9][0-9]*)?")
GROUP_NAME = re.compile(r"([0-9]{1,9})_(.+)", re.S)
META_TEXT = ("framework", "framework_version", "layerdiff_version", "python", "dtype", "compute_dtype", "script",
             "script_sha256", "weights_sha256", "inputs_sha256", "upstream_sha256")
ADVICE = "Write it again with `layerdiff dump` (or `layerdiff run`)."


class _HDF5Error(Exception):
    """What HDF5 raised reading a damaged file, with the reason it gave."""


@dataclass
class _Node:
    """One object of the file as opening it found it: a group's member names, or a dataset's form."""

    path: str
    attrs: dict[str, Any]
    members: list[str] | None = None
    shape: tuple[int, ...] = ()
    dtype: np.dtype[Any] = field(default_factory=lambda: np.dtype("f8"))


def _reason(exc: BaseException) -> str:
    """HDF5's message on one line (its own messages hold newlines), shortened."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _shown(value: Any, limit: int = 60) -> str:
    """A value from the file in a message: on one line, printable, short."""
    text = ascii(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _h5(call: Callable[[], Any]) -> Any:
    """One call into h5py: whatever it raises for a damaged file becomes ``_HDF5Error``.

    HDF5 raises OSError, KeyError, ValueError, RuntimeError or TypeError for a damaged file, whichever its layers
    happen to use; MemoryError stays what it is, and so do signals.
    """
    try:
        return call()
    except MemoryError:
        raise
    except Exception as exc:
        raise _HDF5Error(_reason(exc)) from None


class Dump:
    """A dump opened for reading; tensors are read one at a time, when asked for.

    Raises:
        DumpError: the file is missing, not a dump, of another schema, damaged or reaching outside itself.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.source = self.path.name
        if not self.path.is_file():
            raise DumpError(f"{self.path}: no such file.")
        if not is_dump(self.path):
            raise DumpError(f"{self.path} is not an HDF5 file. Give a dump written by `layerdiff dump` or `layerdiff run`.")
        try:
            self.file = _h5(lambda: h5py.File(self.path, "r"))
        except _HDF5Error as exc:
            raise DumpError(f"{self.path} is a damaged HDF5 file: HDF5 cannot open it ({exc}). {ADVICE}") from None
        try:
            self._open()
        except BaseException:
            self.file.close()
            raise

    def _open(self) -> None:
        nodes = self._catalogue()
        root = nodes["/"]
        schema = root.attrs.get("layerdiff_schema")
        if schema is None or "/layers" not in nodes or "/params" not in nodes:
            raise DumpError(f"{self.path} is an HDF5 file but not a layerdiff dump (no layerdiff_schema attribute).")
        version = self._integer(root, "layerdiff_schema")
        if version not in READS:
            raise DumpError(
                f"{self.path} has dump schema {version}; this layerdiff reads schemas {', '.join(map(str, READS))}. "
                "Write it again with this version's `layerdiff dump`."
            )
        self._nodes = nodes
        self._meta = self._checked_meta(root)
        self._loss = self._number(root, "loss")
        self._groups = self._ordered(nodes, "/layers")
        self.layers = [self._layer(i, g) for i, g in enumerate(self._groups)]
        self._params: dict[str, _Node] = {}
        for g in self._ordered(nodes, "/params"):
            name, spec = self._param(g)
            if name in self._params:
                raise self._damaged(f"names parameter {_shown(name)} twice", g.path)
            self._params[name] = spec
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise self._damaged(f"has two layers named {_shown(twice)}", "/layers")
        for layer, g in zip(self.layers, self._groups):
            for p in layer.params:
                if p not in self._params:
                    raise self._damaged(f"names parameter {_shown(p)}, which /params does not hold", g.path)
        self._arrays_of = {group: self._array_paths(nodes, group) for group in ("/inputs", "/upstream")}
        targets = nodes.get("/targets")
        if targets is not None and targets.members is not None:
            raise self._damaged("is a group, not a dataset", "/targets")
        self._targets = None if targets is None else targets.path

    # --- the walk: every link and attribute, before any value -----------------------------------------------

    def _catalogue(self) -> dict[str, _Node]:
        nodes: dict[str, _Node] = {}
        seen: set[int] = set()
        file_size = os.path.getsize(self.path)

        def visit(oid: Any, where: str, depth: int) -> None:
            info = _h5(lambda: h5py.h5o.get_info(oid))
            if info.addr in seen:  # a second hard link to one object (a group holding itself): never written by us
                raise self._damaged("links back to an object already read", where)
            seen.add(info.addr)
            if info.type == h5py.h5o.TYPE_DATASET:
                ds = _h5(lambda: h5py.Dataset(oid))
                nodes[where] = self._dataset_node(ds, where, _h5(lambda: dict(ds.attrs)), file_size)
                return
            if info.type != h5py.h5o.TYPE_GROUP:
                raise self._damaged("is a committed datatype, which a dump never holds", where)
            if depth >= MAX_DEPTH:
                raise self._damaged("is a group nested deeper than a dump's", where)
            group = _h5(lambda: h5py.Group(oid))
            attrs = _h5(lambda: dict(group.attrs))
            names = sorted(_h5(lambda: list(group.keys())))
            for name in names:
                child = f"{where.rstrip('/')}/{name}"
                key = name.encode()
                kind = _h5(lambda: oid.links.get_info(key).type)
                if kind == h5py.h5l.TYPE_EXTERNAL:
                    filename, path = _h5(lambda: oid.links.get_val(key))
                    raise self._refused(f"is an external link to {_shown(filename, 240)}:{_shown(path)}", child)
                if kind == h5py.h5l.TYPE_SOFT:
                    raise self._refused(f"is a soft link to {_shown(_h5(lambda: oid.links.get_val(key)), 240)}", child)
                if kind != h5py.h5l.TYPE_HARD:
                    raise self._refused("is a user-defined link", child)
                visit(_h5(lambda: h5py.h5o.open(oid, key)), child, depth + 1)
            nodes[where] = _Node(where, attrs, names)

        try:
            visit(self.file.id, "/", 0)
        except _HDF5Error as exc:
            raise DumpError(f"{self.path} is a damaged layerdiff dump: HDF5 cannot read its structure ({exc}). {ADVICE}") from None
        return nodes

    def _dataset_node(self, ds: h5py.Dataset, where: str, attrs: dict[str, Any], file_size: int) -> _Node:
        plist = _h5(lambda: ds.id.get_create_plist())
        if _h5(lambda: plist.get_external_count()):
            raise self._refused(f"keeps its values in another file ({_shown(_h5(lambda: plist.get_external(0))[0], 240)})", where)
        if _h5(lambda: plist.get_layout()) == h5py.h5d.VIRTUAL:
            raise self._refused("is a virtual dataset, whose values come from other files", where)
        filters = _h5(lambda: [plist.get_filter(i)[0] for i in range(plist.get_nfilters())])
        unknown = [f for f in filters if f not in FILTERS]
        if unknown:
            raise self._refused(
                f"is encoded with HDF5 filter {unknown[0]}, which layerdiff never writes (HDF5 would load a plugin "
                "to decode it)", where
            )
        shape = tuple(int(d) for d in _h5(lambda: ds.id.shape) or ())
        dtype = _h5(lambda: ds.id.dtype)
        if dtype.kind not in NUMERIC or dtype.fields is not None or dtype.subdtype is not None:
            raise self._damaged(f"holds values of type {_shown(str(dtype))}, not numbers", where)
        entries = math.prod(shape)
        stored = _h5(lambda: ds.id.get_storage_size())
        if _falsy(attrs.get("stored", 1)):
            if entries > MAX_UNSTORED:
                raise self._refused(f"declares shape {shape}, {entries:.2e} values", where)
        else:
            claimed = entries * dtype.itemsize
            ratio = MAX_RATIO if any(f in (h5py.h5z.FILTER_DEFLATE, LZF) for f in filters) else 1
            if claimed > ratio * max(stored, 0) + 4096 or stored > file_size:
                raise self._refused(
                    f"declares shape {shape} ({_size(claimed)}) but stores {_size(stored)} in a file of "
                    f"{_size(file_size)}", where
                )
            if claimed and not stored:
                raise self._damaged(f"holds no data for its shape {shape}", where)
        return _Node(where, attrs, None, shape, dtype)

    # --- the schema, on what the walk found -----------------------------------------------------------------

    def _checked_meta(self, root: _Node) -> dict[str, Any]:
        meta = {}
        for k, v in root.attrs.items():
            if not isinstance(k, str) or not k.isprintable():
                raise self._damaged(f"has an attribute named {_shown(k)}", "/")
            meta[k] = self._plain(v, f"/ attribute '{k}'")
        for k in META_TEXT:
            if k in meta and not isinstance(meta[k], str):
                raise self._damaged(f"attribute '{k}' is {_shown(meta[k])}, not text", "/")
        if "seed" in meta and (not isinstance(meta["seed"], int) or isinstance(meta["seed"], bool) or meta["seed"] < 0):
            raise self._damaged(f"attribute 'seed' is {_shown(meta['seed'])}, not a seed (a whole number from 0)", "/")
        noise = meta.get("run_to_run")
        if noise is not None and noise != "not measured":
            if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
                raise self._damaged(f"attribute 'run_to_run' is {_shown(noise)}, not a relative error from 0 to 1", "/")
        if "compute_dtype" in meta and meta["compute_dtype"] not in _FLOAT_NAMES:
            raise self._damaged(f"attribute 'compute_dtype' is {_shown(meta['compute_dtype'])}, not a float type", "/")
        return meta

    def _plain(self, v: Any, where: str, parse: bool = True) -> Any:
        """An attribute as plain Python: text (JSON decoded where it is JSON), a number, or a list of numbers."""
        if isinstance(v, bytes):
            try:
                v = v.decode()
            except UnicodeDecodeError:
                raise self._damaged("is not UTF-8 text", where) from None
        if isinstance(v, np.ndarray) and v.ndim == 0:
            v = v[()]
        if isinstance(v, np.generic):
            if v.dtype.kind not in NUMERIC and v.dtype.kind not in "SU":
                raise self._damaged(f"holds a {_shown(str(v.dtype))} value", where)
            v = v.item()
            if isinstance(v, bytes):
                return self._plain(v, where, parse)
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in NUMERIC or v.ndim != 1:
                raise self._damaged(f"holds an array of {_shown(str(v.dtype))} {v.shape}", where)
            return v.tolist()
        if isinstance(v, str):
            if not v.isprintable():
                raise self._damaged(f"holds unprintable text {_shown(v)}", where)
            if parse and v[:1] in "[{":
                try:
                    return json.loads(v)
                except ValueError:
                    pass
            return v
        if isinstance(v, (bool, int, float, complex)):
            return v
        raise self._damaged(f"holds a {type(v).__name__}", where)

    def _text(self, node: _Node, key: str, default: str | None = None) -> str:
        if key not in node.attrs and default is not None:
            return default
        v = self._plain(self._attr(node, key), f"{node.path} attribute '{key}'", parse=False)
        if not isinstance(v, str):
            raise self._damaged(f"attribute '{key}' is {_shown(v)}, not text", node.path)
        return v

    def _number(self, node: _Node, key: str, default: float | None = None) -> float:
        if key not in node.attrs and default is not None:
            return default
        v = self._plain(self._attr(node, key), f"{node.path} attribute '{key}'")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self._damaged(f"attribute '{key}' is {_shown(v)}, not a number", node.path)
        return float(v)

    def _integer(self, node: _Node, key: str) -> int:
        v = self._number(node, key)
        if not v.is_integer():
            raise self._damaged(f"attribute '{key}' is {_shown(v)}, not a whole number", node.path)
        return int(v)

    def _flag(self, node: _Node, key: str, default: bool) -> bool:
        if key not in node.attrs:
            return default
        v = self._plain(node.attrs[key], f"{node.path} attribute '{key}'")
        if v not in (0, 1) or isinstance(v, float):
            raise self._damaged(f"attribute '{key}' is {_shown(v)}, not 0 or 1", node.path)
        return bool(v)

    def _attr(self, node: _Node, key: str) -> Any:
        if key not in node.attrs:
            raise self._damaged(f"has no attribute '{key}'", node.path)
        return node.attrs[key]

    def _ordered(self, nodes: dict[str, _Node], group: str) -> list[_Node]:
        """The members of ``/layers`` or ``/params``, each a group named ``0042_fc1``, in that number's order."""
        found = []
        for name in self._members(nodes, group):
            match = GROUP_NAME.fullmatch(name)
            node = nodes[f"{group}/{name}"]
            if match is None:
                raise self._damaged("is not named NNNN_name", node.path)
            if node.members is None:
                raise self._damaged("is a dataset, not a group", node.path)
            found.append((int(match.group(1)), node))
        found.sort(key=lambda pair: pair[0])
        return [node for _, node in found]

    def _members(self, nodes: dict[str, _Node], group: str) -> list[str]:
        node = nodes[group]
        if node.members is None:
            raise self._damaged("is a dataset, not a group", group)
        return node.members

    def _layer(self, index: int, g: _Node) -> LayerInfo:
        name = self._name(g, "name")
        kind = self._text(g, "kind")
        try:
            params = json.loads(self._text(g, "params"))
        except ValueError:
            params = None
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise self._damaged(f"attribute 'params' is {_shown(g.attrs.get('params'))}, not a JSON list of names", g.path)
        tensors = {}
        for key in sorted(self._members(self._nodes, g.path), key=_tensor_order):
            node = self._nodes[f"{g.path}/{key}"]
            if not TENSOR_KEY.fullmatch(key):
                raise self._damaged("is not a tensor a layer records (input, output, grad_output, grad_input)", node.path)
            tensors[key] = self._info(node)
        if not tensors:
            raise self._damaged("holds no tensors", g.path)
        return LayerInfo(index, name, kind, tensors, tuple(params))

    def _name(self, node: _Node, key: str) -> str:
        name = self._text(node, key)
        if not name or not name.isprintable():
            raise self._damaged(f"attribute '{key}' is {_shown(name)}, not a name", node.path)
        return name

    def _info(self, node: _Node) -> TensorInfo:
        if node.members is not None:
            raise self._damaged("is a group, not a dataset", node.path)
        layout = self._text(node, "layout", "")
        axes = axes_of(layout)
        if len(set(axes)) != len(axes) or not all(a.isidentifier() for a in axes):
            raise self._damaged(f"attribute 'layout' is {_shown(layout)}, not a list of axis names", node.path)
        norm, mean = self._number(node, "norm"), self._number(node, "mean")
        if not norm >= 0:
            raise self._damaged(f"attribute 'norm' is {_shown(norm)}, not a norm", node.path)
        sketch = self._plain(node.attrs["sketch"], f"{node.path} attribute 'sketch'") if "sketch" in node.attrs else []
        if not isinstance(sketch, list) or len(sketch) not in (0, 2) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in sketch):
            raise self._damaged(f"attribute 'sketch' is {_shown(sketch)}, not two numbers", node.path)
        stored = self._flag(node, "stored", True)
        finite = self._flag(node, "finite", True) if "finite" in node.attrs else None
        sha256 = self._text(node, "sha256", "")
        if not stored and (len(sketch) != 2 or not sha256 or finite is None):
            raise self._damaged("keeps no values and not the statistics that stand for them", node.path)
        return TensorInfo(canonical_shape(node.shape, layout), str(node.dtype), norm, mean, layout, stored, sha256,
                          tuple(float(x) for x in sketch), finite)

    def _param(self, g: _Node) -> tuple[str, _Node]:
        name = self._name(g, "name")
        self._text(g, "layer")
        self._text(g, "layout")
        members = self._members(self._nodes, g.path)
        if "value" not in members:
            raise self._damaged("has no dataset 'value'", g.path)
        extra = [m for m in members if m not in ("value", "grad")]
        if extra:
            raise self._damaged(f"holds {_shown(extra[0])}, which a parameter never does", g.path)
        for key in members:
            node = self._nodes[f"{g.path}/{key}"]
            if node.members is not None:
                raise self._damaged("is a group, not a dataset", node.path)
            self._flag(node, "stored", True)
        value = self._nodes[f"{g.path}/value"]
        if "grad" in members and self._nodes[f"{g.path}/grad"].shape != value.shape:
            raise self._damaged(f"has a gradient of shape {self._nodes[g.path + '/grad'].shape} for a value of shape {value.shape}", g.path)
        if "grad" in members:
            self._info(self._nodes[f"{g.path}/grad"])
        return name, g

    def _array_paths(self, nodes: dict[str, _Node], group: str) -> list[str]:
        if group not in nodes:
            return []
        members = self._members(nodes, group)
        if sorted(members, key=lambda m: (len(m), m)) != [str(i) for i in range(len(members))]:
            raise self._damaged(f"holds {_shown(members)}, not datasets named 0, 1, 2…", group)
        paths = [f"{group}/{i}" for i in range(len(members))]
        for p in paths:
            if nodes[p].members is not None:
                raise self._damaged("is a group, not a dataset", p)
        return paths

    def _damaged(self, problem: str, where: str) -> DumpError:
        return DumpError(f"{self.path} is a damaged layerdiff dump: {where} {problem}. {ADVICE}")

    def _refused(self, problem: str, where: str) -> DumpError:
        return DumpError(
            f"{self.path} is refused: {where} {problem}. A dump holds its data itself and layerdiff reads nothing "
            f"outside it; {ADVICE[0].lower()}{ADVICE[1:]}"
        )

    # --- values: one dataset at a time, through ``_read`` -------------------------------------------------------

    def _read(self, where: str) -> np.ndarray:
        """The values of one dataset; what HDF5 raises for damaged data, one line naming it."""
        node = self._nodes.get(where)
        if node is None or node.members is not None:
            raise self._damaged("is missing, or a group where a dataset belongs", where)
        try:
            value = np.asarray(_h5(lambda: self.file[where][()]))
        except _HDF5Error as exc:
            raise self._damaged(f"cannot be read ({exc})", where) from None
        except MemoryError:
            raise DumpError(f"Not enough memory to read {where} of {self.path} ({_size(math.prod(node.shape) * node.dtype.itemsize)}).") from None
        if value.shape != node.shape:
            raise self._damaged(f"read as shape {value.shape}, not {node.shape}", where)
        return value

    @property
    def info(self) -> RunInfo:
        return _read_info(self._meta)

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
        return canonical(self._read(f"{self._groups[index].path}/{key}"), info.layout)

    def param_names(self) -> list[str]:
        return list(self._params)

    def finite(self, index: int, key: str) -> bool:
        noted = self.layers[index].tensors[key].finite
        return all_finite(self.tensor(index, key)) if noted is None else noted

    def param(self, name: str) -> ParamRecord:
        g = self._params[name]
        if not self._flag(self._nodes[f"{g.path}/value"], "stored", True):
            raise DumpError(
                f"{self.path} holds no value of parameter '{name}', only its hash (written with --skip-copied-weights "
                "or --stats-only): take the weights from the dump of the other side, or write it again without them."
            )
        value = self._read(f"{g.path}/value")
        placement = self._text(g, "placement", "")
        return ParamRecord(name, self._text(g, "layer"), self._text(g, "layout"), value, self.param_grad(name), placement)

    def spec(self, name: str) -> ParamRecord:
        g = self._params[name]
        node = self._nodes[f"{g.path}/value"]
        return ParamRecord(name, self._text(g, "layer"), self._text(g, "layout"), placeholder(node.shape, node.dtype))

    def param_grad(self, name: str) -> np.ndarray | None:
        g = self._params[name]
        if f"{g.path}/grad" not in self._nodes:
            return None
        if not self._flag(self._nodes[f"{g.path}/grad"], "stored", True):
            raise DumpError(f"{self.path} holds statistics only for the gradient of parameter '{name}' (a --stats-only dump).")
        return self._read(f"{g.path}/grad")

    def param_info(self, name: str) -> TensorInfo | None:
        g = self._params[name]
        if f"{g.path}/grad" not in self._nodes:
            return None
        layout = self._text(g, "layout")  # statistics are of the gradient in PyTorch's order, as a layer's are
        node = self._nodes[f"{g.path}/grad"]
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
        values = [self._read(p) for p in self._arrays_of.get(f"/{group}", [])]
        if group == "inputs":
            bad = next((i for i, v in enumerate(values) if not all_finite(v)), None)
            if bad is not None:
                raise self._damaged("holds NaN or infinite inputs, which no comparison can judge", f"/inputs/{bad}")
            recorded = self._meta.get("inputs_sha256")
            if recorded and digest(values) != recorded:
                raise self._tampered("inputs", "inputs_sha256")
        upstream = str(self._meta.get("upstream_sha256", ""))
        if group == "upstream" and upstream.startswith("random:") and "random:" + digest(values) != upstream:
            raise self._tampered("upstream gradients", "upstream_sha256")
        return values

    @property
    def targets(self) -> np.ndarray | None:
        value = None if self._targets is None else self._read(self._targets)
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
        if "/regions" not in self._nodes:
            return []
        found = []
        for name in sorted(self._members(self._nodes, "/regions")):
            g = self._nodes[f"/regions/{name}"]
            keys = self._plain(self._attr(g, "keys"), f"{g.path} attribute 'keys'")
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise self._damaged(f"attribute 'keys' is {_shown(keys)}, not a JSON list of names", g.path)
            tensors = {key: (self._read(f"{g.path}/{k}.compiled"), self._read(f"{g.path}/{k}.eager")) for k, key in enumerate(keys)}
            found.append(RegionRecord(self._text(g, "name"), self._text(g, "modules"), tensors, self._text(g, "first_op")))
        return found

    def placements(self, index: int) -> dict[str, str]:
        """How each tensor of a layer is spread over the ranks, where the rank's recording said (a sharded run)."""
        g = self._groups[index]
        tensors = {k: self._nodes[f"{g.path}/{k}"] for k in self._members(self._nodes, g.path)}
        return {k: self._text(node, "placement") for k, node in tensors.items() if "placement" in node.attrs}

    def trace(self) -> Trace:
        """Everything in memory (small dumps, tests), every tensor in PyTorch's order."""
        layers = [
            LayerRecord(info.name, info.kind, {k: self.tensor(info.index, k) for k in info.tensors}, list(info.params),
                        placements=self.placements(info.index))
            for info in self.layers
        ]
        trace = Trace(layers, list(self.params()), self.loss, self.info, self.arrays("inputs"), self.targets, self.arrays("upstream"))
        trace.regions = self.regions()
        return trace

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_FLOAT_NAMES = {"float16", "bfloat16", "float32", "float64", "float128", "longdouble"}


def _falsy(v: Any) -> bool:
    try:
        return not bool(v)
    except (TypeError, ValueError):
        return False


def _tensor_order(key: str) -> tuple[int, int, str]:
    """``records.key_order`` for the keys a dump may hold, any other last (and refused)."""
    return (*key_order(key), key) if TENSOR_KEY.fullmatch(key) else (99, 0, key)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _index(group_name: str) -> int:
    """Groups are named "0042_fc1": ordered by that number, also past 9999."""
    return int(group_name.split("_", 1)[0])


NOT_MEASURED = "not measured"  # run_to_run of a side run once (--once)
INFO_FIELDS = tuple(f.name for f in fields(RunInfo) if f.name != "settings")
INT_FIELDS = ("seed", "rank", "world_size")


def _info_attrs(info: RunInfo) -> dict[str, Any]:
    """A run's information as the root attributes of its dump: one per field, and the adapter's settings beside them."""
    attrs: dict[str, Any] = {name: getattr(info, name) for name in INFO_FIELDS}
    attrs["run_to_run"] = NOT_MEASURED if info.run_to_run is None else info.run_to_run
    return {**dict(info.settings), **attrs}


def _read_info(attrs: dict[str, Any]) -> RunInfo:
    """``_info_attrs`` read back; the attributes it does not know are the adapter's settings."""
    known = {name: attrs[name] for name in INFO_FIELDS if name in attrs}
    known["run_to_run"] = attrs.get("run_to_run") if isinstance(attrs.get("run_to_run"), (int, float)) else None
    for name in INFO_FIELDS:
        if name in known and name != "run_to_run":
            known[name] = int(known[name]) if name in INT_FIELDS else str(known[name])
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
