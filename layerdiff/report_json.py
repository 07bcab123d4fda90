"""The comparison as JSON (``layerdiff run --json``, ``Result.json()``): plain data, every figure as the terminal
report states it, infinite errors as strings (JSON has no infinity)."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any, Iterable

from layerdiff.records import RunInfo
from layerdiff.report import JSON_SCHEMA
from layerdiff.results import Comparison, Culprit, Divergence, Precision
from layerdiff.sync import WeightLink


def to_json(
    result: Comparison,
    *,
    links: list[WeightLink] | None = None,
    weights_from: str = "",
    notes: Iterable[str] = (),
    dumps: Iterable[str] = (),
) -> dict[str, Any]:
    """The comparison as a JSON-ready dict (``schema`` versions its form)."""

    def first(d: Divergence | None) -> dict[str, Any] | None:
        return None if d is None else plain(d)

    def culprit(c: Culprit) -> dict[str, Any]:
        d: dict[str, Any] = plain({f.name: getattr(c, f.name) for f in fields(c) if f.name != "values"})
        d["pass"] = d.pop("pass_")
        return d

    return {
        "schema": JSON_SCHEMA,
        "match": result.match,
        "a": {"source": result.source_a, "meta": _meta(result.info_a), "loss": result.loss_a},
        "b": {"source": result.source_b, "meta": _meta(result.info_b), "loss": result.loss_b},
        "tolerance": "noise floor" if result.fixed_tol is None else result.fixed_tol,
        "culprits": None if result.culprits is None else [culprit(c) for c in result.culprits],
        "forward": {"first_divergence": first(result.forward), "first_culprit": _opt(result.first_culprit("forward"), culprit)},
        "backward": {"first_divergence": first(result.backward), "first_culprit": _opt(result.first_culprit("backward"), culprit)},
        "nonfinite_origin": result.nonfinite,
        "layers": [
            {
                "layer_a": layer.layer_a,
                "layer_b": layer.layer_b,
                "kind_a": layer.kind_a,
                "kind_b": layer.kind_b,
                "ok": layer.ok,
                "verdict": layer.verdict,
                "verdicts": {p: layer.verdict_in(p) for p in ("forward", "backward")},
                "tensors": [plain(t) for t in layer.tensors],
                "param_grads": [plain(t) for t in layer.param_grads],
                "local": [plain(t) for t in layer.local],
                "notes": layer.notes,
            }
            for layer in result.layers
        ],
        "only_a": result.only_a,
        "only_b": result.only_b,
        "fused": {"a": result.fused_a, "b": result.fused_b},
        "zooms": [plain(z) for z in result.zooms],
        "structure": result.structure,
        "weights": {
            "from": weights_from,
            "links": [
                {"a": w.src, "b": w.dst, "a_shape": w.src_shape, "b_shape": w.dst_shape, "transpose": w.axes, "by": w.how,
                 "note": w.note}
                for w in links or []
            ],
            "check": None if result.weights is None else [{"ok": p.ok, **plain(p)} for p in result.weights.params],
        },
        "feed": list(notes),
        "dumps": list(dumps),
        "precision": [_precision_json(p) for p in result.precision],
    }


def _precision_json(p: Precision) -> dict[str, Any]:
    report: dict[str, Any] = {"ok": p.ok, **plain(p)}
    for layer, shown in zip(p.layers, report["layers"]):
        for t, tensor in zip(layer.tensors, shown["tensors"]):
            tensor["ok"] = t.ok
    return report


def _meta(info: RunInfo) -> dict[str, Any]:
    """A run's information as the JSON report has it: the fields, and the adapter's settings beside them."""
    fields_ = {f.name: getattr(info, f.name) for f in fields(info) if f.name != "settings"}
    return {**dict(info.settings), **fields_, "run_to_run": "not measured" if info.run_to_run is None else info.run_to_run}


def _opt(c: Culprit | None, f: Any) -> Any:
    return None if c is None else f(c)


def plain(obj: Any) -> Any:
    """A result as JSON-ready data: dataclasses to dicts, tuples to lists, infinities and NaN to strings."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj
