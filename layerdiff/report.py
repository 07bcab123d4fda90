"""Render a comparison: a terminal report and a JSON document. Computes nothing of its own."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from layerdiff.compare import Comparison, Divergence, LayerDiff, TensorDiff
from layerdiff.sync import WeightLink

JSON_SCHEMA = 1


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if math.isinf(x) or math.isnan(x):
        return str(x)
    return f"{x:.1e}"


def _worst(tensors: Iterable[TensorDiff]) -> TensorDiff | None:
    items = list(tensors)
    if not items:
        return None
    return max(items, key=lambda t: (not t.ok, t.max_rel))


def _cells(t: TensorDiff | None) -> list[Text]:
    if t is None:
        return [Text("-", style="dim"), Text("-", style="dim")]
    style = "" if t.ok else "bold red"
    if t.problem == "shape":
        return [Text("shape", style=style), Text("", style=style)]
    return [Text(_num(t.max_abs), style=style), Text(_num(t.max_rel), style=style)]


def _layer_label(layer: LayerDiff) -> str:
    return layer.layer_a if layer.layer_a == layer.layer_b else f"{layer.layer_a} ~ {layer.layer_b}"


def _divergence(d: Divergence | None, direction: str) -> Text:
    if d is None:
        return Text("no divergence", style="green")
    where = d.layer_a if d.layer_a == d.layer_b else f"{d.layer_a} (b: {d.layer_b})"
    text = Text.assemble(("first divergence at ", ""), (where, "bold red"), f" {direction}: {d.tensor}, max abs {_num(d.max_abs)}, max rel {_num(d.max_rel)}")
    if d.note:
        text.append(f" ({d.note})")
    return text


def render(
    result: Comparison,
    console: Console,
    *,
    links: list[WeightLink] | None = None,
    weights_from: str = "",
    notes: Iterable[str] = (),
    dumps: Iterable[str] = (),
) -> None:
    """Print the report: header, weights and feed, structure, the per-layer table, the verdict."""
    ma, mb = result.meta_a, result.meta_b
    console.print(
        Text.assemble(
            ("layerdiff ", "bold"),
            f"{result.source_a} ({ma.get('framework', '?')} {ma.get('framework_version', '')}, {ma.get('compute_dtype', '?')}) vs "
            f"{result.source_b} ({mb.get('framework', '?')} {mb.get('framework_version', '')}, {mb.get('compute_dtype', '?')}), "
            f"rtol {result.rtol:g}",
        )
    )
    if links is not None:
        console.print(f"weights: {len(links)} tensors copied from {weights_from}")
        for w in links:
            console.print(f"  {w.describe()}", highlight=False)
    for note in notes:
        console.print(f"feed: {note}", highlight=False)
    for line in result.structure:
        console.print(Text(f"structure: {line}", style="yellow"))

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col, justify in (("#", "right"), ("layer", "left"), ("out abs", "right"), ("out rel", "right"),
                         ("grad abs", "right"), ("grad rel", "right"), ("param abs", "right"), ("param rel", "right"), ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for i, layer in enumerate(result.layers):
        outputs = _worst(t for t in layer.tensors if t.key.startswith("output"))
        grads = _worst(t for t in layer.tensors if t.key.startswith("grad"))
        params = _worst(layer.param_grads)
        verdict = Text("ok", style="green") if layer.ok else Text("DIFF", style="bold red")
        table.add_row(str(i), _layer_label(layer), *_cells(outputs), *_cells(grads), *_cells(params), verdict)
    console.print(table)
    if result.only_a:
        console.print(f"only in {result.source_a}: {', '.join(result.only_a)}", highlight=False)
    if result.only_b:
        console.print(f"only in {result.source_b}: {', '.join(result.only_b)}", highlight=False)
    console.print(Text.assemble(("forward  ", "bold"), _divergence(result.forward, "(counted from the input)")))
    console.print(Text.assemble(("backward ", "bold"), _divergence(result.backward, "(counted from the output)")))
    for path in dumps:
        console.print(f"dump: {path}", highlight=False)
    if result.match:
        console.print(Text("result: the same within tolerance", style="bold green"))
    else:
        console.print(Text("result: they diverge", style="bold red"))


def to_json(
    result: Comparison,
    *,
    links: list[WeightLink] | None = None,
    weights_from: str = "",
    notes: Iterable[str] = (),
    dumps: Iterable[str] = (),
) -> dict[str, Any]:
    """The comparison as a JSON-ready dict (``schema`` versions its form)."""

    def divergence(d: Divergence | None) -> dict[str, Any] | None:
        return None if d is None else _clean(asdict(d))

    return {
        "schema": JSON_SCHEMA,
        "match": result.match,
        "a": {"source": result.source_a, "meta": result.meta_a, "loss": result.loss_a},
        "b": {"source": result.source_b, "meta": result.meta_b, "loss": result.loss_b},
        "rtol": result.rtol,
        "forward": {"first_divergence": divergence(result.forward)},
        "backward": {"first_divergence": divergence(result.backward)},
        "layers": [
            {
                "layer_a": layer.layer_a,
                "layer_b": layer.layer_b,
                "kind_a": layer.kind_a,
                "kind_b": layer.kind_b,
                "ok": layer.ok,
                "tensors": [_clean(asdict(t)) for t in layer.tensors],
                "param_grads": [_clean(asdict(t)) for t in layer.param_grads],
            }
            for layer in result.layers
        ],
        "only_a": result.only_a,
        "only_b": result.only_b,
        "structure": result.structure,
        "weights": {
            "from": weights_from,
            "links": [{"a": w.src, "b": w.dst, "transpose": w.axes, "by": w.how} for w in links or []],
        },
        "feed": list(notes),
        "dumps": list(dumps),
    }


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no infinity: such errors become strings."""
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
