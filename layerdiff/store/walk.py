"""The checking walk: a dump's every link and attribute, checked before any value is read, and the readers that
check each attribute and dataset as it is read. ``Dump`` reads a dump through nothing else."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from layerdiff.errors import DumpError

NUMERIC = "biufc"
LZF = 32000  # h5py's own filter, registered by h5py itself: no plugin is loaded for it
FILTERS = {h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32, LZF}
# Deflate's best ratio is about 1032:1 (a run of zeros), so no dataset holds more values per byte of storage than
# that; one that claims to is refused before HDF5 allocates its values.
MAX_RATIO = 1100
MAX_UNSTORED = 1 << 40  # entries a stats-only dataset may declare (only its shape is ever used)
MAX_DEPTH = 5  # / steps 3 optimizer 0000_fc1.W exp_avg (a dump of training steps; one iteration: / layers 0000_fc1 output)
GROUP_NAME = re.compile(r"([0-9]{1,9})_(.+)", re.S)
META_TEXT = ("framework", "framework_version", "layerdiff_version", "python", "dtype", "compute_dtype", "script",
             "script_sha256", "weights_sha256", "inputs_sha256", "upstream_sha256")
FLOAT_NAMES = {"float16", "bfloat16", "float32", "float64", "float128", "longdouble"}
ADVICE = "Write it again with `layerdiff dump` (or `layerdiff run`)."


class _HDF5Error(Exception):
    """What HDF5 raised reading a damaged file, with the reason it gave."""


@dataclass
class Node:
    """One object of the file as opening it found it: a group's member names, or a dataset's form."""

    path: str
    attrs: dict[str, Any]
    members: list[str] | None = None
    shape: tuple[int, ...] = ()
    dtype: np.dtype[Any] = field(default_factory=lambda: np.dtype("f8"))


def is_dump(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like HDF5 (by its signature), so that the CLI can tell dumps from scripts."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


class Walk:
    """A dump opened and walked: ``nodes``, every object of the file by its path, with its attributes as read.

    Raises:
        DumpError: the file is missing, not HDF5, damaged, or reaching outside itself.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise DumpError(f"{path}: no such file.")
        if not is_dump(path):
            raise DumpError(f"{path} is not an HDF5 file. Give a dump written by `layerdiff dump` or `layerdiff run`.")
        try:
            self.file = _h5(lambda: h5py.File(path, "r"))
        except _HDF5Error as exc:
            raise DumpError(f"{path} is a damaged HDF5 file: HDF5 cannot open it ({exc}). {ADVICE}") from None
        try:
            self.nodes = self._catalogue()
        except BaseException:
            self.file.close()
            raise

    def close(self) -> None:
        self.file.close()

    def damaged(self, problem: str, where: str) -> DumpError:
        return DumpError(f"{self.path} is a damaged layerdiff dump: {where} {problem}. {ADVICE}")

    def refused(self, problem: str, where: str) -> DumpError:
        return DumpError(
            f"{self.path} is refused: {where} {problem}. A dump holds its data itself and layerdiff reads nothing "
            f"outside it; {ADVICE[0].lower()}{ADVICE[1:]}"
        )

    # --- the walk: every link and attribute, before any value -----------------------------------------------

    def _catalogue(self) -> dict[str, Node]:
        nodes: dict[str, Node] = {}
        seen: set[int] = set()
        file_size = os.path.getsize(self.path)

        def visit(oid: Any, where: str, depth: int) -> None:
            info = _h5(lambda: h5py.h5o.get_info(oid))
            if info.addr in seen:  # a second hard link to one object (a group holding itself): never written by us
                raise self.damaged("links back to an object already read", where)
            seen.add(info.addr)
            if info.type == h5py.h5o.TYPE_DATASET:
                ds = _h5(lambda: h5py.Dataset(oid))
                nodes[where] = self._dataset_node(ds, where, _h5(lambda: dict(ds.attrs)), file_size)
                return
            if info.type != h5py.h5o.TYPE_GROUP:
                raise self.damaged("is a committed datatype, which a dump never holds", where)
            if depth >= MAX_DEPTH:
                raise self.damaged("is a group nested deeper than a dump's", where)
            group = _h5(lambda: h5py.Group(oid))
            attrs = _h5(lambda: dict(group.attrs))
            names = sorted(_h5(lambda: list(group.keys())))
            for name in names:
                child = f"{where.rstrip('/')}/{name}"
                key = name.encode()
                kind = _h5(lambda: oid.links.get_info(key).type)
                if kind == h5py.h5l.TYPE_EXTERNAL:
                    filename, path = _h5(lambda: oid.links.get_val(key))
                    raise self.refused(f"is an external link to {shown(filename, 240)}:{shown(path)}", child)
                if kind == h5py.h5l.TYPE_SOFT:
                    raise self.refused(f"is a soft link to {shown(_h5(lambda: oid.links.get_val(key)), 240)}", child)
                if kind != h5py.h5l.TYPE_HARD:
                    raise self.refused("is a user-defined link", child)
                visit(_h5(lambda: h5py.h5o.open(oid, key)), child, depth + 1)
            nodes[where] = Node(where, attrs, names)

        try:
            visit(self.file.id, "/", 0)
        except _HDF5Error as exc:
            raise DumpError(f"{self.path} is a damaged layerdiff dump: HDF5 cannot read its structure ({exc}). {ADVICE}") from None
        return nodes

    def _dataset_node(self, ds: h5py.Dataset, where: str, attrs: dict[str, Any], file_size: int) -> Node:
        plist = _h5(lambda: ds.id.get_create_plist())
        if _h5(lambda: plist.get_external_count()):
            raise self.refused(f"keeps its values in another file ({shown(_h5(lambda: plist.get_external(0))[0], 240)})", where)
        if _h5(lambda: plist.get_layout()) == h5py.h5d.VIRTUAL:
            raise self.refused("is a virtual dataset, whose values come from other files", where)
        filters = _h5(lambda: [plist.get_filter(i)[0] for i in range(plist.get_nfilters())])
        unknown = [f for f in filters if f not in FILTERS]
        if unknown:
            raise self.refused(
                f"is encoded with HDF5 filter {unknown[0]}, which layerdiff never writes (HDF5 would load a plugin "
                "to decode it)", where
            )
        shape = tuple(int(d) for d in _h5(lambda: ds.id.shape) or ())
        dtype = _h5(lambda: ds.id.dtype)
        if dtype.kind not in NUMERIC or dtype.fields is not None or dtype.subdtype is not None:
            raise self.damaged(f"holds values of type {shown(str(dtype))}, not numbers", where)
        entries = math.prod(shape)
        stored = _h5(lambda: ds.id.get_storage_size())
        if _falsy(attrs.get("stored", 1)):
            if entries > MAX_UNSTORED:
                raise self.refused(f"declares shape {shape}, {entries:.2e} values", where)
        else:
            claimed = entries * dtype.itemsize
            ratio = MAX_RATIO if any(f in (h5py.h5z.FILTER_DEFLATE, LZF) for f in filters) else 1
            if claimed > ratio * max(stored, 0) + 4096 or stored > file_size:
                raise self.refused(
                    f"declares shape {shape} ({_size(claimed)}) but stores {_size(stored)} in a file of "
                    f"{_size(file_size)}", where
                )
            if claimed and not stored:
                raise self.damaged(f"holds no data for its shape {shape}", where)
        return Node(where, attrs, None, shape, dtype)

    # --- attributes, as the schema allows them ---------------------------------------------------------------

    def meta(self, where: str = "/") -> dict[str, Any]:
        """The attributes of the run's group (the root, or a training step's) as plain Python; those whose type the
        schema fixes, checked."""
        meta = {}
        for k, v in self.nodes[where].attrs.items():
            if not isinstance(k, str) or not k.isprintable():
                raise self.damaged(f"has an attribute named {shown(k)}", where)
            meta[k] = self.plain(v, f"{where} attribute '{k}'")
        for k in META_TEXT:
            if k in meta and not isinstance(meta[k], str):
                raise self.damaged(f"attribute '{k}' is {shown(meta[k])}, not text", "/")
        if "seed" in meta and (not isinstance(meta["seed"], int) or isinstance(meta["seed"], bool) or meta["seed"] < 0):
            raise self.damaged(f"attribute 'seed' is {shown(meta['seed'])}, not a seed (a whole number from 0)", "/")
        noise = meta.get("run_to_run")
        if noise is not None and noise != "not measured":
            if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
                raise self.damaged(f"attribute 'run_to_run' is {shown(noise)}, not a relative error from 0 to 1", "/")
        if "compute_dtype" in meta and meta["compute_dtype"] not in FLOAT_NAMES:
            raise self.damaged(f"attribute 'compute_dtype' is {shown(meta['compute_dtype'])}, not a float type", "/")
        return meta

    def plain(self, v: Any, where: str, parse: bool = True) -> Any:
        """An attribute as plain Python: text (JSON decoded where it is JSON), a number, or a list of numbers."""
        if isinstance(v, bytes):
            try:
                v = v.decode()
            except UnicodeDecodeError:
                raise self.damaged("is not UTF-8 text", where) from None
        if isinstance(v, np.ndarray) and v.ndim == 0:
            v = v[()]
        if isinstance(v, np.generic):
            if v.dtype.kind not in NUMERIC and v.dtype.kind not in "SU":
                raise self.damaged(f"holds a {shown(str(v.dtype))} value", where)
            v = v.item()
            if isinstance(v, bytes):
                return self.plain(v, where, parse)
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in NUMERIC or v.ndim != 1:
                raise self.damaged(f"holds an array of {shown(str(v.dtype))} {v.shape}", where)
            return v.tolist()
        if isinstance(v, str):
            if not v.isprintable():
                raise self.damaged(f"holds unprintable text {shown(v)}", where)
            if parse and v[:1] in "[{":
                try:
                    return json.loads(v)
                except ValueError:
                    pass
            return v
        if isinstance(v, (bool, int, float, complex)):
            return v
        raise self.damaged(f"holds a {type(v).__name__}", where)

    def text(self, node: Node, key: str, default: str | None = None) -> str:
        if key not in node.attrs and default is not None:
            return default
        v = self.plain(self.attr(node, key), f"{node.path} attribute '{key}'", parse=False)
        if not isinstance(v, str):
            raise self.damaged(f"attribute '{key}' is {shown(v)}, not text", node.path)
        return v

    def name(self, node: Node, key: str) -> str:
        name = self.text(node, key)
        if not name or not name.isprintable():
            raise self.damaged(f"attribute '{key}' is {shown(name)}, not a name", node.path)
        return name

    def number(self, node: Node, key: str, default: float | None = None) -> float:
        if key not in node.attrs and default is not None:
            return default
        v = self.plain(self.attr(node, key), f"{node.path} attribute '{key}'")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.damaged(f"attribute '{key}' is {shown(v)}, not a number", node.path)
        return float(v)

    def integer(self, node: Node, key: str) -> int:
        v = self.number(node, key)
        if not v.is_integer():
            raise self.damaged(f"attribute '{key}' is {shown(v)}, not a whole number", node.path)
        return int(v)

    def flag(self, node: Node, key: str, default: bool) -> bool:
        if key not in node.attrs:
            return default
        v = self.plain(node.attrs[key], f"{node.path} attribute '{key}'")
        if v not in (0, 1) or isinstance(v, float):
            raise self.damaged(f"attribute '{key}' is {shown(v)}, not 0 or 1", node.path)
        return bool(v)

    def attr(self, node: Node, key: str) -> Any:
        if key not in node.attrs:
            raise self.damaged(f"has no attribute '{key}'", node.path)
        return node.attrs[key]

    # --- groups ------------------------------------------------------------------------------------------------

    def ordered(self, group: str) -> list[Node]:
        """The members of ``/layers`` or ``/params``, each a group named ``0042_fc1``, in that number's order."""
        found = []
        for name in self.members(group):
            match = GROUP_NAME.fullmatch(name)
            node = self.nodes[f"{group}/{name}"]
            if match is None:
                raise self.damaged("is not named NNNN_name", node.path)
            if node.members is None:
                raise self.damaged("is a dataset, not a group", node.path)
            found.append((int(match.group(1)), node))
        found.sort(key=lambda pair: pair[0])
        return [node for _, node in found]

    def members(self, group: str) -> list[str]:
        node = self.nodes[group]
        if node.members is None:
            raise self.damaged("is a dataset, not a group", group)
        return node.members

    # --- values: one dataset at a time, through ``read`` --------------------------------------------------------

    def read(self, where: str) -> np.ndarray:
        """The values of one dataset; what HDF5 raises for damaged data, one line naming it."""
        node = self.nodes.get(where)
        if node is None or node.members is not None:
            raise self.damaged("is missing, or a group where a dataset belongs", where)
        try:
            value = np.asarray(_h5(lambda: self.file[where][()]))
        except _HDF5Error as exc:
            raise self.damaged(f"cannot be read ({exc})", where) from None
        except MemoryError:
            raise DumpError(f"Not enough memory to read {where} of {self.path} ({_size(math.prod(node.shape) * node.dtype.itemsize)}).") from None
        if value.shape != node.shape:
            raise self.damaged(f"read as shape {value.shape}, not {node.shape}", where)
        return value


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


def _reason(exc: BaseException) -> str:
    """HDF5's message on one line (its own messages hold newlines), shortened."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def shown(value: Any, limit: int = 60) -> str:
    """A value from the file in a message: on one line, printable, short."""
    text = ascii(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _falsy(v: Any) -> bool:
    try:
        return not bool(v)
    except (TypeError, ValueError):
        return False
