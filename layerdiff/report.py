"""Render a comparison: a terminal report and a JSON document. Computes nothing of its own."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from layerdiff.compare import Comparison, Culprit, Divergence, LayerDiff, TensorDiff
from layerdiff.sync import WeightLink

JSON_SCHEMA = 1
STYLE = {"culprit": "bold red", "inherited": "yellow", "differs": "bold red", "ok": "green"}


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if math.isinf(x) or math.isnan(x):
        return str(x)
    return f"{x:.1e}"


def _worst(tensors: Iterable[TensorDiff]) -> TensorDiff | None:
    items = list(tensors)
    return max(items, key=lambda t: (not t.ok, t.max_rel)) if items else None


def _cell(t: TensorDiff | None, field: str) -> Text:
    if t is None:
        return Text("-", style="dim")
    if t.problem == "shape":
        return Text("shape", style="bold red")
    return Text(_num(getattr(t, field)), style="" if t.ok else "bold red")


def _where(layer_a: str, layer_b: str) -> str:
    return layer_a if layer_a == layer_b else f"{layer_a} (b: {layer_b})"


def _divergence(d: Divergence | None, direction: str) -> Text:
    if d is None:
        return Text("no divergence", style="green")
    text = Text.assemble("first divergence at ", (_where(d.layer_a, d.layer_b), "bold"), f" {direction}: {d.tensor}")
    text.append(f", max abs {_num(d.max_abs)}, max rel {_num(d.max_rel)}")
    if d.note:
        text.append(f" ({d.note})")
    return text


def _culprit(c: Culprit) -> Text:
    what = {"forward": "forward", "backward": "backward", "param_grad": "parameter gradient"}[c.pass_]
    text = Text.assemble(("culprit ", "bold red"), (_where(c.layer_a, c.layer_b), "bold"), f" [{what}] {c.tensor}: ")
    text.append(f"max abs {_num(c.max_abs)}, max rel {_num(c.max_rel)}; tolerance {_num(c.tol)} ")
    text.append(f"(passes at {_num(c.max_rel)})", style="dim")
    if c.hint:
        text.append(f"\n  hint: {c.hint}")
    return text


def _tensors(layer: LayerDiff, kinds: tuple[str, ...], local: bool = False) -> list[TensorDiff]:
    source = layer.local if local else layer.tensors
    return [t for t in source if t.key.split(".")[0] in kinds]


def _local_params(layer: LayerDiff) -> list[TensorDiff]:
    return [t for t in layer.local if " ~ " in t.key]


def _verdict(layer: LayerDiff) -> Text:
    return Text(layer.verdict, style=STYLE.get(layer.verdict, ""))


def _forward_table(result: Comparison) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", title="forward, from the input", title_justify="left")
    for col in ("#", "layer", "out abs", "out rel", "local", "amp", "verdict"):
        table.add_column(col, justify="left" if col in ("layer", "verdict") else "right")
    previous = None
    for i, layer in enumerate(result.layers):
        out = _worst(_tensors(layer, ("output",)))
        local = _worst(_tensors(layer, ("output",), local=True))
        amp = "-"
        if out is not None and previous and out.max_rel:
            amp = f"x{out.max_rel / previous:.3g}"
        previous = out.max_rel if out is not None else previous
        table.add_row(str(i), _where(layer.layer_a, layer.layer_b), _cell(out, "max_abs"), _cell(out, "max_rel"), _cell(local, "max_rel"), amp, _verdict(layer))
    return table


def _backward_table(result: Comparison) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", title="backward, from the output", title_justify="left")
    for col in ("#", "layer", "grad abs", "grad rel", "local", "param rel", "local", "verdict"):
        table.add_column(col, justify="left" if col in ("layer", "verdict") else "right")
    for i, layer in reversed(list(enumerate(result.layers))):
        grad = _worst(_tensors(layer, ("grad_input", "grad_output")))
        local = _worst(_tensors(layer, ("grad_input", "grad_output"), local=True))
        params = _worst(layer.param_grads)
        local_params = _worst(_local_params(layer))
        table.add_row(
            str(i), _where(layer.layer_a, layer.layer_b), _cell(grad, "max_abs"), _cell(grad, "max_rel"), _cell(local, "max_rel"),
            _cell(params, "max_rel"), _cell(local_params, "max_rel"), _verdict(layer),
        )
    return table


def render(
    result: Comparison,
    console: Console,
    *,
    links: list[WeightLink] | None = None,
    weights_from: str = "",
    notes: Iterable[str] = (),
    dumps: Iterable[str] = (),
) -> None:
    """Print the report: the verdict and culprits first, then how both sides were fed, then the tables."""
    ma, mb = result.meta_a, result.meta_b
    console.print(
        Text.assemble(
            ("layerdiff ", "bold"),
            f"{result.source_a} ({ma.get('framework', '?')} {ma.get('framework_version', '')}, {ma.get('compute_dtype', '?')}) vs "
            f"{result.source_b} ({mb.get('framework', '?')} {mb.get('framework_version', '')}, {mb.get('compute_dtype', '?')})",
        )
    )
    culprits = result.culprits or []
    if result.match:
        console.print(Text("result: the same within tolerance", style="bold green"))
    else:
        count = f", {len(culprits)} culprit{'s' if len(culprits) != 1 else ''}" if result.culprits is not None else ""
        console.print(Text(f"result: they diverge{count}", style="bold red"))
    for c in culprits:
        console.print(_culprit(c))
    console.print(Text.assemble(("forward  ", "bold"), _divergence(result.forward, "(counted from the input)")))
    console.print(Text.assemble(("backward ", "bold"), _divergence(result.backward, "(counted from the output)")))
    if result.culprits is None and not result.match:
        console.print("(two dumps: no replay, so no culprits; compare a dump against a model file to isolate them)")
    for side, origin in result.nonfinite.items():
        for direction, layer in origin.items():
            if layer:
                source = result.source_a if side == "a" else result.source_b
                console.print(Text(f"NaN/Inf: first produced in {source} by '{layer}' ({direction}: finite in, non-finite out)", style="bold red"))
    for line in result.structure:
        console.print(Text(f"structure: {line}", style="yellow"))
    if links is not None:
        console.print(f"weights: {len(links)} tensors copied from {weights_from}")
        for w in links:
            console.print(f"  {w.describe()}")
    for note in notes:
        console.print(f"feed: {note}")
    noise = ", ".join(f"{s} {_num(m.get('run_to_run')) if isinstance(m.get('run_to_run'), float) else m.get('run_to_run', '-')}" for s, m in (("a", ma), ("b", mb)))
    tolerance = f"fixed {result.fixed_tol:g}" if result.fixed_tol is not None else "noise floor of each layer"
    console.print(f"tolerance: {tolerance}; run-to-run noise: {noise}")
    console.print(_forward_table(result))
    console.print(_backward_table(result))
    if result.only_a:
        console.print(f"only in {result.source_a}: {', '.join(result.only_a)}")
    if result.only_b:
        console.print(f"only in {result.source_b}: {', '.join(result.only_b)}")
    for path in dumps:
        console.print(f"dump: {path}")


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

    def culprit(c: Culprit) -> dict[str, Any]:
        d = _clean(asdict(c))
        d["pass"] = d.pop("pass_")
        return d

    return {
        "schema": JSON_SCHEMA,
        "match": result.match,
        "a": {"source": result.source_a, "meta": result.meta_a, "loss": result.loss_a},
        "b": {"source": result.source_b, "meta": result.meta_b, "loss": result.loss_b},
        "tolerance": "noise floor" if result.fixed_tol is None else result.fixed_tol,
        "culprits": None if result.culprits is None else [culprit(c) for c in result.culprits],
        "forward": {"first_divergence": divergence(result.forward), "first_culprit": _opt(result.first_culprit("forward"), culprit)},
        "backward": {"first_divergence": divergence(result.backward), "first_culprit": _opt(result.first_culprit("backward"), culprit)},
        "nonfinite_origin": result.nonfinite,
        "layers": [
            {
                "layer_a": layer.layer_a,
                "layer_b": layer.layer_b,
                "kind_a": layer.kind_a,
                "kind_b": layer.kind_b,
                "ok": layer.ok,
                "verdict": layer.verdict,
                "tensors": [_clean(asdict(t)) for t in layer.tensors],
                "param_grads": [_clean(asdict(t)) for t in layer.param_grads],
                "local": [_clean(asdict(t)) for t in layer.local],
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


def _opt(c: Culprit | None, f: Any) -> Any:
    return None if c is None else f(c)


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no infinity: such errors become strings."""
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
