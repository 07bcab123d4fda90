"""How much precision a side loses, layer by layer, and whether its precision explains it.

With ``--dtype native``, a side that computes below float64 has a float64 twin (``twins``): the same model on the
same weights and inputs. The twin is replayed forced with the side's own values, so that each of its layers computes
in float64 on exactly what the side's layer received: the distance between the two is that layer's rounding alone
(``lost``); the distance to the twin's plain run is what has been lost by then (``cumulative``). Both are relative
L2 errors, ``‖x - x64‖ / ‖x64‖``: a scale error of 5% measures 5% whatever the tensor's size, where a maximum over
entries grows with the number of entries rounded.

What precision explains for a tensor whose entries each sum ``n`` terms (``reduction``) is

    explained = 4 · (eps_storage + eps_accumulation · sqrt(n))

with ``eps_storage`` the spacing of the dtype the side computed in (of TF32 or bfloat16 where its float32 matrix
products run in them) and ``eps_accumulation`` that of float32 for the half types, which every framework layerdiff
drives accumulates in float32, else of the dtype itself. On the clean fixture pairs the worst tensor measures 0.6
(bfloat16), 1.2 (float16) and 0.5·sqrt(n) (float32) spacings (``benchmarks/precision.py``): the factor 4 stands
above all of them.
"""

from __future__ import annotations

import math

import numpy as np

from layerdiff.errors import DumpError, term
from layerdiff.layout import axes_of, canonical_shape, is_guess
from layerdiff.metrics import EPS, grad_floor
from layerdiff.records import LayerInfo, ParamRecord, Recording, RunInfo, keys_of
from layerdiff.results import Comparison, LayerRounding, Precision, Rounding

SPACING = {**EPS, "tf32": 2.0**-10}  # TF32 keeps 10 bits of mantissa
HALF = ("float16", "bfloat16")
MARGIN = 4.0
MATMUL = {"tf32", "bfloat16"}  # what a float32 matrix product may compute in, as adapters record it


def refuse_unjudged(a: RunInfo, b: RunInfo, rtol: float | None, source_a: str, source_b: str) -> None:
    """Refuse to compare a side that computed in half precision without a float64 rerun of it (two dumps, or a dump
    against a script): its noise floor reaches tens of percent, and "the same within tolerance" would mean nothing.

    Raises:
        DumpError: naming the side and its dtype, and the two ways on: the model files with ``--dtype native``, or
            a tolerance of the caller's own.
    """
    coarse = [(s, i.compute_dtype) for s, i in ((source_a, a), (source_b, b)) if i.compute_dtype in HALF]
    if coarse and rtol is None:
        side, dtype = coarse[0]
        raise DumpError(
            f"{side} computed in {dtype}, and without a float64 rerun of it a difference of tens of percent cannot be "
            f"told from rounding. Compare the two model files with {term('dtype', 'native', repr('native'))} (each side "
            f"judged against its own float64 rerun), or give a tolerance of your own with {term('rtol', 'R', 'R')}."
        )


def explained(dtype: str, n: int, matmul: str = "") -> float:
    """The relative L2 error rounding explains for a tensor computed in ``dtype`` whose entries each sum ``n`` terms;
    ``matmul``: what the side's float32 matrix products compute in, when not float32.

    >>> f"{explained('bfloat16', 64):.1e}", f"{explained('float32', 64):.1e}", f"{explained('float32', 64, 'tf32'):.1e}"
    ('3.1e-02', '4.3e-06', '3.9e-03')
    """
    storage = SPACING.get(dtype, SPACING["float32"])
    if dtype == "float32" and matmul in MATMUL:
        storage = max(storage, SPACING[matmul])
    accumulation = SPACING["float32"] if dtype in HALF else SPACING.get(dtype, SPACING["float32"])
    return MARGIN * (storage + accumulation * math.sqrt(max(n, 1)))


def reduction(layer: LayerInfo, key: str, params: list[ParamRecord]) -> int:
    """The terms each entry of ``layer``'s tensor ``key`` sums (a parameter's name: its gradient).

    A weight's fan-in for the output, its fan-out for the input gradient, batch times positions for a parameter's
    gradient. Where the layer's weights do not say (it has none, or their layout was guessed and the input does not
    confirm it), the size of what the tensor is computed from, which no reduction of it exceeds.
    """

    def size(k: str) -> int:
        return int(np.prod(layer.tensors[k].shape)) if k in layer.tensors else 1

    param = next((p for p in params if p.name == key), None)
    if param is not None:
        axes = axes_of(param.layout)
        out = next((param.value.shape[i] for i, a in enumerate(axes) if a in ("out", "O")), 0) if len(axes) == param.value.ndim else 0
        return max(size("grad_output") // out, 1) if out else size("grad_output")
    fans = [f for f in (_fans(p, layer) for p in params) if f is not None]
    if key.split(".")[0] == "output":
        return sum(f[0] for f in fans) if fans else size("input")
    return sum(f[1] for f in fans) if fans else size("grad_output")


def _fans(p: ParamRecord, layer: LayerInfo) -> tuple[int, int] | None:
    """A weight's fan-in and fan-out, from its layout: (out, in, kernel...) in PyTorch's order."""
    axes = axes_of(p.layout)
    if p.value.ndim < 2 or len(axes) != p.value.ndim or not ({"out", "in"} <= set(axes) or {"O", "I"} <= set(axes)):
        return None
    out, fan_in, *kernel = canonical_shape(p.value.shape, p.layout)
    given = layer.tensors.get("input")
    channel = None if given is None or len(given.shape) < 2 else given.shape[-1 if p.value.ndim == 2 else 1]
    if is_guess(p.layout) and channel != fan_in:
        return None  # a guessed layout the input does not confirm: either axis may be the one summed over
    window = int(np.prod(kernel)) if kernel else 1
    return fan_in * window, out * window


def judge(side: str, own: Recording, twin: Recording, local: Recording) -> Precision:
    """Side ``side``'s rounding, layer by layer: its recording ``own`` against its twin's plain run ``twin`` and the
    twin's replay ``local``, forced with ``own``'s values."""
    settings = own.info.settings
    matmul = settings.get("float32_matmul", "")
    in_twin = {layer.name: layer.index for layer in twin.layers}
    in_local = {layer.name: layer.index for layer in local.layers}
    layers = []
    for layer in own.layers:
        if layer.name not in in_local:
            continue
        where = (layer.index, in_local[layer.name], in_twin.get(layer.name))
        params = [own.spec(name) for name in layer.params]
        tensors = _tensors(own, twin, local, layer, where, params, matmul if matmul in MATMUL else "")
        if tensors:
            layers.append(LayerRounding(layer.name, layer.kind, tensors))
    return Precision(side, own.source, own.info.compute_dtype, matmul if matmul in MATMUL else "", layers)


def _tensors(
    own: Recording,
    twin: Recording,
    local: Recording,
    layer: LayerInfo,
    where: tuple[int, int, int | None],
    params: list[ParamRecord],
    matmul: str,
) -> list[Rounding]:
    i, k, t = where
    found = []
    replayed = local.layers[k].tensors
    for key in keys_of(layer.tensors, "output") + keys_of(layer.tensors, "grad_input"):
        if key not in replayed or not np.issubdtype(np.dtype(layer.tensors[key].dtype), np.inexact):
            continue
        dtype = _coarser(layer.tensors[key].dtype, own.info.compute_dtype)
        n = reduction(layer, key, params)
        plain = twin.tensor(t, key) if t is not None and key in twin.layers[t].tensors else None
        found.append(_rounding(key, own.tensor(i, key), local.tensor(k, key), plain, explained(dtype, n, matmul), n, 0.0))
    for p in params:
        mine, replay = own.param_grad(p.name), local.param_grad(p.name)
        if mine is None or replay is None:
            continue
        n = reduction(layer, p.name, params)
        floor = grad_floor(layer, int(np.prod(p.value.shape)))
        dtype = _coarser(str(mine.dtype), own.info.compute_dtype)
        found.append(_rounding(p.name, mine, replay, twin.param_grad(p.name), explained(dtype, n, matmul), n, floor))
    return found


def _rounding(
    key: str, x: np.ndarray, replayed: np.ndarray, plain: np.ndarray | None, allowed: float, n: int, floor: float
) -> Rounding:
    lost, nonfinite = relative_l2(x, replayed, floor)
    cumulative = None if plain is None or plain.shape != x.shape else relative_l2(x, plain, floor)[0]
    return Rounding(key, lost, allowed, n, cumulative, None, nonfinite)


def relative_l2(x: np.ndarray, ref: np.ndarray, floor: float = 0.0) -> tuple[float, int]:
    """``‖x - ref‖ / ‖ref‖`` over the entries finite on both sides, the norm of ``ref`` floored at ``floor`` times the
    square root of its size (a gradient that is zero in exact arithmetic); and the entries finite on one side only.

    >>> relative_l2(np.array([1.05, 2.1]), np.array([1.0, 2.0]))
    (0.05000000000000004, 0)
    """
    x64, r64 = np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(ref, dtype=np.float64).reshape(-1)
    if x64.size != r64.size:
        return math.inf, 0
    fin_x, fin_r = np.isfinite(x64), np.isfinite(r64)
    both = fin_x & fin_r
    same = (np.isnan(x64) & np.isnan(r64)) | (~fin_x & ~fin_r & (x64 == r64))
    err = float(np.linalg.norm(np.where(both, x64 - r64, 0.0)))
    scale = max(float(np.linalg.norm(np.where(both, r64, 0.0))), floor * math.sqrt(r64.size))
    lost = err / scale if scale > 0 else (0.0 if err == 0 else math.inf)
    return lost, int(np.count_nonzero(~(both | same)))


def _coarser(*dtypes: str) -> str:
    return max(dtypes, key=lambda d: SPACING.get(d, SPACING["float32"]))


def culprits(precision: Precision) -> list[tuple[str, Rounding]]:
    """The tensors that lose more than their precision explains, as culprits are named: per layer the first of its
    outputs, the first of its input gradients, and a parameter's gradient only where the input gradient is right."""
    found = []
    for layer in precision.layers:
        bad = [t for t in layer.tensors if not t.ok]
        forward = [t for t in bad if t.key.startswith("output")]
        backward = [t for t in bad if t.key.startswith("grad_input")]
        params = [t for t in bad if t not in forward and t not in backward]
        found += [(layer.layer, t[0]) for t in (forward, backward or params) if t]
    return found


def with_excess(precision: Precision, comparison: Comparison) -> Precision:
    """``precision`` with each tensor's excess: the twins' local error at the same layer and tensor, which is the
    part of the two sides' difference that no rounding explains."""
    by_layer = {(layer.layer_a if precision.side == "a" else layer.layer_b): layer for layer in comparison.layers}
    for rounded in precision.layers:
        compared = by_layer.get(rounded.layer)
        if compared is None:
            continue
        for t in rounded.tensors:
            for d in compared.local:
                names = d.key.split(" ~ ")
                mine = names[0 if precision.side == "a" else 1] if len(names) == 2 else d.key
                if mine == t.key:
                    t.excess = d.rel_l2
    return precision
