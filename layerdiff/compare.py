"""Compare two recordings layer by layer: per tensor errors, a verdict each, and the first divergence.

Pure NumPy. Tensors are read one pair at a time, so memory does not grow with the number of layers. A tensor
recorded with a layout (channels-last activations) is compared in PyTorch's order.

An element of ``a`` agrees with ``b`` when ``|a - b| <= rtol * (|b| + rms(b))``: relative to the value, floored at
the tensor's RMS so that entries near zero (where float error is absolute, not relative) do not explode.
``max_rel`` is the largest ``|a - b| / (|b| + rms(b))``: the smallest ``rtol`` that would have passed the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from deepdiff import DeepDiff

from layerdiff import sync
from layerdiff.align import Alignment, align
from layerdiff.errors import DumpError
from layerdiff.records import Recording

# Default rtol per compute dtype: well above what a correct implementation's rounding reaches, well below a bug.
RTOL = {"float64": 1e-8, "float32": 1e-4, "float16": 1e-2, "bfloat16": 1e-2}
HASHES = ("weights_sha256", "inputs_sha256", "upstream_sha256")


def rtol_for(*dtypes: str) -> float:
    """The tolerance of the least precise dtype among ``dtypes``.

    >>> rtol_for("float64", "float32")
    0.0001
    """
    return max(RTOL.get(d, RTOL["float32"]) for d in dtypes)


@dataclass
class TensorDiff:
    key: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    dtype_a: str
    dtype_b: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    rel_l2: float = 0.0
    mismatch_fraction: float = 0.0
    nonfinite_mismatch: int = 0
    ok: bool = True
    problem: str = ""  # "shape" or "nonfinite" when no number says it


@dataclass
class LayerDiff:
    layer_a: str
    layer_b: str
    kind_a: str
    kind_b: str
    tensors: list[TensorDiff] = field(default_factory=list)
    param_grads: list[TensorDiff] = field(default_factory=list)  # key: "<a's parameter> ~ <b's parameter>"

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tensors + self.param_grads)

    def get(self, key: str) -> TensorDiff | None:
        return next((t for t in self.tensors if t.key == key), None)


@dataclass
class Divergence:
    layer_a: str
    layer_b: str
    tensor: str
    max_abs: float
    max_rel: float
    note: str = ""


@dataclass
class Comparison:
    source_a: str
    source_b: str
    rtol: float
    layers: list[LayerDiff]
    forward: Divergence | None
    backward: Divergence | None
    only_a: list[str]
    only_b: list[str]
    structure: list[str]
    meta_a: dict[str, Any]
    meta_b: dict[str, Any]
    loss_a: float | None
    loss_b: float | None

    @property
    def match(self) -> bool:
        return self.forward is None and self.backward is None and all(layer.ok for layer in self.layers)


def diff(key: str, a: np.ndarray, b: np.ndarray, rtol: float) -> TensorDiff:
    """Compare one tensor pair.

    >>> d = diff("output", np.array([1.0, 2.0]), np.array([1.0, 2.2]), 1e-8)
    >>> d.ok, round(d.max_abs, 3)
    (False, 0.2)
    """
    result = TensorDiff(key, tuple(a.shape), tuple(b.shape), str(a.dtype), str(b.dtype))
    if a.shape != b.shape:
        if a.size != b.size or _squeezed(a.shape) != _squeezed(b.shape):
            result.ok, result.problem = False, "shape"
            return result
        a = a.reshape(b.shape)  # (1, n) against (n,): nnfs biases
    a64 = a.astype(np.float64, copy=False)
    b64 = b.astype(np.float64, copy=False)
    fin_a, fin_b = np.isfinite(a64), np.isfinite(b64)
    both = fin_a & fin_b
    # Non-finite entries agree only when both are NaN, or both the same infinity.
    same_special = (np.isnan(a64) & np.isnan(b64)) | (~fin_a & ~fin_b & (a64 == b64))
    result.nonfinite_mismatch = int(np.count_nonzero(~both & ~same_special))
    if a64.size == 0:
        return result
    err = np.abs(np.where(both, a64 - b64, 0.0))
    ref = np.where(both, b64, 0.0)
    rms = float(np.sqrt(np.mean(ref * ref)))
    rel = err / (np.abs(ref) + rms) if rms > 0 else np.where(err > 0, np.inf, 0.0)
    result.max_abs = float(err.max())
    result.max_rel = float(rel.max())
    norm_b = float(np.linalg.norm(ref.ravel()))
    result.rel_l2 = float(np.linalg.norm(err.ravel())) / norm_b if norm_b > 0 else (0.0 if result.max_abs == 0 else np.inf)
    bad = (rel > rtol) | ~(both | same_special)
    result.mismatch_fraction = float(np.count_nonzero(bad)) / a64.size
    result.ok = not bad.any()
    if result.nonfinite_mismatch:
        result.problem = "nonfinite"
    return result


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def check_same_run(a: Recording, b: Recording) -> None:
    """Refuse recordings made with different weights, inputs or upstream gradient.

    Raises:
        DumpError: naming each hash that differs and how to make a matching dump.
    """
    differ = [h for h in HASHES if a.meta.get(h) and b.meta.get(h) and a.meta.get(h) != b.meta.get(h)]
    if differ:
        what = ", ".join(h.removesuffix("_sha256") for h in differ)
        raise DumpError(
            f"{a.source} and {b.source} were made with different {what}, so their layers cannot be compared. "
            f"Make one from the other (`layerdiff dump {b.source.removesuffix('.h5')}.py --weights-from {a.source}`), "
            "or pass --force to compare them anyway."
        )


def compare(
    a: Recording,
    b: Recording,
    *,
    links: list[sync.WeightLink] | None = None,
    layer_map: dict[str, str] | None = None,
    rtol: float | None = None,
) -> Comparison:
    """Compare two recordings of one iteration.

    Args:
        a, b: recordings (dumps or in-memory traces) made with the same weights, inputs and upstream gradient.
        links: how ``a``'s parameters map onto ``b``'s; worked out from names, order and layouts when absent.
        layer_map: layer names of ``a`` mapped to layer names of ``b``, overriding alignment.
        rtol: the tolerance; by default the one of the least precise compute dtype of the two.

    Returns:
        A ``Comparison``: per-layer errors, the first divergence of each pass, what only one side has.
    """
    tol = rtol if rtol is not None else rtol_for(str(a.meta.get("compute_dtype", "float64")), str(b.meta.get("compute_dtype", "float64")))
    alignment = align(a, b, layer_map)
    if links is None:
        links = sync.link(_specs(a), _specs(b), {}, a.source, b.source)
    by_src = {w.src: w for w in links}
    layers = [_compare_layer(a, b, i, j, by_src, tol) for i, j in alignment.pairs]
    return Comparison(
        a.source,
        b.source,
        tol,
        layers,
        _first_forward(layers),
        _first_backward(layers),
        alignment.only_a,
        alignment.only_b,
        _structure(a, b, alignment),
        a.meta,
        b.meta,
        a.loss,
        b.loss,
    )


def _specs(r: Recording) -> list[Any]:
    """Parameters with their shapes but without reading their values, enough to link them."""
    from layerdiff.records import ParamRecord

    specs = []
    for name in r.param_names():
        p = r.param(name)
        specs.append(ParamRecord(p.name, p.layer, p.layout, p.value))
    return specs


def _compare_layer(
    a: Recording, b: Recording, i: int, j: int, by_src: dict[str, sync.WeightLink], rtol: float
) -> LayerDiff:
    la, lb = a.layers[i], b.layers[j]
    result = LayerDiff(la.name, lb.name, la.kind, lb.kind)
    for key, info in la.tensors.items():
        if key in lb.tensors:
            ta = sync.canonical(a.tensor(i, key), info.layout)
            tb = sync.canonical(b.tensor(j, key), lb.tensors[key].layout)
            result.tensors.append(diff(key, ta, tb, rtol))
    for pname in la.params:
        link = by_src.get(pname)
        if link is None or link.dst not in lb.params:
            continue
        pa, pb = a.param(pname), b.param(link.dst)
        if pa.grad is not None and pb.grad is not None:
            result.param_grads.append(diff(f"{pname} ~ {link.dst}", link.apply(pa.grad), pb.grad, rtol))
    return result


def _failing(layer: LayerDiff, prefixes: tuple[str, ...]) -> Divergence | None:
    for t in layer.tensors:
        if t.key.split(".")[0] in prefixes and not t.ok:
            return Divergence(layer.layer_a, layer.layer_b, t.key, t.max_abs, t.max_rel, _note(t))
    return None


def _note(t: TensorDiff) -> str:
    if t.problem == "shape":
        return f"shape {t.shape_a} against {t.shape_b}"
    if t.problem == "nonfinite":
        return f"{t.nonfinite_mismatch} NaN/Inf entries on one side only"
    if t.key.startswith("input") or t.key == "grad_output":
        return "already different where this layer receives it: the cause is in code between captured layers"
    return ""


def _first_forward(layers: list[LayerDiff]) -> Divergence | None:
    for layer in layers:
        found = _failing(layer, ("input",)) or _failing(layer, ("output",))
        if found:
            return found
    return None


def _first_backward(layers: list[LayerDiff]) -> Divergence | None:
    for layer in reversed(layers):
        found = _failing(layer, ("grad_output",)) or _failing(layer, ("grad_input",))
        if found:
            return found
        bad = next((p for p in layer.param_grads if not p.ok), None)
        if bad:
            return Divergence(layer.layer_a, layer.layer_b, f"grad of {bad.key}", bad.max_abs, bad.max_rel, _note(bad))
    return None


def _structure(a: Recording, b: Recording, alignment: Alignment) -> list[str]:
    """Differences of form, reported before any number: settings, hashes, and shapes or dtypes of matched tensors."""
    keys = ("dtype", "compute_dtype", "seed", *HASHES)
    meta = DeepDiff({k: a.meta.get(k) for k in keys}, {k: b.meta.get(k) for k in keys})
    lines = [
        f"{path[0]}: {change['old_value']} in {a.source}, {change['new_value']} in {b.source}"
        for path, change in ((p.path(output_format="list"), {"old_value": p.t1, "new_value": p.t2}) for p in meta.tree.get("values_changed", []))
    ]
    dtypes: dict[tuple[str, str], int] = {}
    for i, j in alignment.pairs:
        la, lb = a.layers[i], b.layers[j]
        shapes = DeepDiff(
            {k: list(sync.canonical_shape(t.shape, t.layout)) for k, t in la.tensors.items() if k in lb.tensors},
            {k: list(sync.canonical_shape(t.shape, t.layout)) for k, t in lb.tensors.items() if k in la.tensors},
        )
        for change in (c for kind in shapes.tree.values() for c in kind):
            key = change.path(output_format="list")[0]
            lines.append(
                f"Layer '{la.name}' {key} has shape {tuple(la.tensors[key].shape)} in {a.source} "
                f"but {tuple(lb.tensors[key].shape)} in {b.source}."
            )
        for k, t in la.tensors.items():
            if k in lb.tensors and t.dtype != lb.tensors[k].dtype:
                dtypes[t.dtype, lb.tensors[k].dtype] = dtypes.get((t.dtype, lb.tensors[k].dtype), 0) + 1
    lines += [f"{n} tensors are {x} in {a.source} but {y} in {b.source}." for (x, y), n in dtypes.items()]
    return sorted(set(lines), key=lines.index)
