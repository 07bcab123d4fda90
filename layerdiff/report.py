"""Render results: the comparison (terminal and JSON), and gradcheck, inspect and overfit. Computes nothing of its own."""

from __future__ import annotations

import io
import math
from dataclasses import asdict, fields, is_dataclass
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from layerdiff.compare import Comparison, Culprit, Divergence, LayerDiff, TensorDiff
from layerdiff.gradcheck import GradCheck
from layerdiff.health import Flag, Health
from layerdiff.overfit import Overfit
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


# One network's health: gradcheck, inspect, overfit. Rendered here like the comparison; computed in their modules.


def text(result: GradCheck | Health | Overfit) -> str:
    """The terminal report of a gradcheck, inspect or overfit result, as plain text."""
    buffer = io.StringIO()
    render_result(result, Console(file=buffer, width=100, color_system=None))
    return buffer.getvalue()


def render_result(result: GradCheck | Health | Overfit, console: Console) -> None:
    if isinstance(result, GradCheck):
        render_gradcheck(result, console)
    elif isinstance(result, Health):
        render_health(result, console)
    else:
        render_overfit(result, console)


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


def _value(x: float) -> str:
    return f"{x:.2e}" if math.isfinite(x) and x != 0 else _num(x)


GRADCHECK_STYLE = {"good": "green", "acceptable": "yellow", "kink": "cyan", "inherited": "yellow", "WRONG": "bold red"}


def render_gradcheck(result: GradCheck, console: Console) -> None:
    """The verdict and culprits, then per layer and tensor: coordinates checked, kinks, the worst coordinate."""
    console.print(
        Text.assemble(
            ("layerdiff gradcheck ", "bold"),
            f"{result.source}: {result.points} coordinates, {result.evaluations} loss evaluations in float64, {result.seconds:.2f} s",
        )
    )
    kinks = sum(c.kinks for layer in result.layers for c in layer.checks)
    kinked = f" ({kinks} coordinate{'s' if kinks != 1 else ''} at a kink, not judged)" if kinks else ""
    if result.passed:
        console.print(Text(f"result: every gradient checks{kinked}", style="bold green"))
    else:
        inherited = sum(layer.verdict == "inherited" for layer in result.layers)
        passed_on = f"; {inherited} layer{'s' if inherited != 1 else ''} before it inherit the error" if inherited else ""
        console.print(Text(f"result: wrong gradient in {', '.join(result.culprits)}{passed_on}{kinked}", style="bold red"))
    for layer in result.layers:
        if layer.verdict != "wrong":
            continue
        for c in layer.checks:
            w = c.worst
            if w is not None and w.status == "wrong":
                what = c.tensor if c.tensor not in ("input", "output") else f"{c.tensor} gradient"
                console.print(
                    Text.assemble(("culprit ", "bold red"), (layer.name, "bold"), f": {what} wrong at [{_index(w.index)}]: numeric {_value(w.numeric)}, "
                                  f"analytic {_value(w.analytic)} (rel {_num(w.rel)})")
                )
        if layer.note:
            console.print(f"  ({layer.note})")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col, justify in (("layer", "left"), ("tensor", "left"), ("n", "right"), ("kinks", "right"), ("rel err", "right"),
                         ("at", "left"), ("numeric", "right"), ("analytic", "right"), ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for layer in result.layers:
        for j, c in enumerate(c for c in layer.checks if c.shown):
            w = c.worst
            # A wrong gradient that the layer only passes on is "inherited"; the layer that makes it, "WRONG".
            status = c.status if c.status != "wrong" else "inherited" if layer.verdict == "inherited" else "WRONG"
            tensor = c.tensor[len(layer.name) + 1:] if c.tensor.startswith(layer.name + ".") else c.tensor  # fc1.W: W
            table.add_row(
                layer.name if j == 0 else "", tensor, str(len(c.points)), str(c.kinks or ""), _num(w.rel) if w else "-",
                _index(w.index) if w else "", _value(w.numeric) if w else "", _value(w.analytic) if w else "",
                Text(status, style=GRADCHECK_STYLE.get(status, "bold red")),
            )
    console.print(table)
    for note in result.notes:
        console.print(note)


def _index(index: tuple[int, ...]) -> str:
    return ",".join(map(str, index))


def _flag_line(flag: Flag) -> Text:
    return Text.assemble((flag.where, "bold red"), f": {flag.message}")


def render_health(h: Health, console: Console) -> None:
    """Flags first, then the parameter table, the layer table and the NaN/Inf counts."""
    console.print(Text.assemble(("layerdiff inspect ", "bold"), h.source))
    if h.healthy:
        console.print(Text("result: nothing flagged", style="bold green"))
    else:
        console.print(Text(f"result: {len(h.flags)} problem{'s' if len(h.flags) != 1 else ''}", style="bold red"))
    for flag in h.flags:
        console.print(_flag_line(flag))
    params = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["parameter", "shape", "‖w‖", "‖grad‖", "‖grad‖/‖w‖"] + ([f"‖Δw‖/‖w‖ lr {h.lr:g}"] if h.lr is not None else [])
    for col in columns:
        params.add_column(col, justify="left" if col in ("parameter", "shape") else "right")
    for p in h.params:
        ratio = "w = 0" if p.ratio is None and p.weight_norm == 0 else _num(p.ratio)
        row = [p.name, str(p.shape), _num(p.weight_norm), _num(p.grad_norm), ratio + (" (bias)" if p.bias and p.ratio is not None else "")]
        params.add_row(*row, *([_num(p.update)] if h.lr is not None else []))
    console.print(params)
    layers = Table(box=None, pad_edge=False, header_style="bold")
    # ‖g‖ and rms of the gradient arriving at the output; zeros: its exact zeros; sat: saturated; off: inactive.
    for col in ("#", "layer", "kind", "act", "‖g‖", "rms", "zeros", "sat", "dead", "off"):
        layers.add_column(col, justify="left" if col in ("layer", "kind", "act") else "right")
    for layer in h.layers:
        layers.add_row(
            str(layer.index), layer.name, layer.kind, layer.activation, _num(layer.grad_norm), _num(layer.grad_rms), _pct(layer.zero_fraction),
            _pct(layer.saturated), _pct(layer.dead), _pct(layer.inactive),
        )
    console.print(layers)
    if h.depth_ratio is not None and h.depth_span is not None:
        console.print(f"gradient RMS, first layer over last: {_num(h.depth_ratio)} ({h.depth_span[0]} / {h.depth_span[1]})")
    if not h.nonfinite:
        console.print("NaN/Inf: none")
        return
    counts = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("NaN/Inf in", "NaN", "+Inf", "-Inf"):
        counts.add_column(col, justify="left" if col == "NaN/Inf in" else "right")
    for n in h.nonfinite:
        counts.add_row(n.where, str(n.nan), str(n.posinf), str(n.neginf))
    console.print(counts)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.0%}"


def render_health_summary(h: Health, console: Console) -> None:
    """The compact per-side section of the ``run`` report: one line, and one per problem."""
    ratios = [p.ratio for p in h.params if p.ratio is not None and not p.bias]
    spread = f"‖grad‖/‖w‖ {_num(min(ratios))}..{_num(max(ratios))}" if ratios else "no weights"
    depth = f", gradient RMS first/last {_num(h.depth_ratio)}" if h.depth_ratio is not None else ""
    if h.healthy:
        console.print(Text.assemble(("health ", "bold"), f"{h.source}: ", ("nothing flagged", "green"), f" ({spread}{depth})"))
        return
    console.print(Text.assemble(("health ", "bold"), f"{h.source}: ", (f"{len(h.flags)} flagged", "bold red"), f" ({spread}{depth})"))
    for flag in h.flags:
        console.print(Text("  ").append_text(_flag_line(flag)))


def _shown_steps(n: int, parted: int | None) -> list[int]:
    steps = {0, n} | {s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if s < n}
    if parted is not None:
        steps |= {s for s in (parted - 1, parted, parted + 1) if 0 <= s <= n}
    return sorted(steps)


def render_overfit(result: Overfit, console: Console) -> None:
    """The loss curves side by side at a few steps, each curve's verdict, and where two curves part."""
    names = ", ".join(c.source for c in result.curves)
    console.print(
        Text.assemble(("layerdiff overfit ", "bold"), f"{names}: {result.steps} steps of plain SGD, lr {result.lr:g}, batch of {result.batch}")
    )
    if result.ok:
        console.print(Text("result: the loss goes toward zero" + (" and the curves agree" if len(result.curves) == 2 else ""), style="bold green"))
    else:
        console.print(Text("result: " + "; ".join(_curve_problems(result)), style="bold red"))
    for note in result.notes:
        console.print(note)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("step", justify="right")
    for c in result.curves:
        table.add_column(c.source, justify="right")
    if len(result.curves) == 2:
        table.add_column("rel diff", justify="right")
    longest = max(len(c.losses) for c in result.curves) - 1
    for step in _shown_steps(longest, result.parted):
        values = [c.losses[step] if step < len(c.losses) else None for c in result.curves]
        row = [str(step)] + ["-" if v is None else f"{v:.6g}" for v in values]
        if len(values) == 2:
            a, b = values
            row.append("-" if a is None or b is None else _num(abs(a - b) / max(abs(a), abs(b), 1e-300)))
        style = "bold red" if step == result.parted else ""
        table.add_row(*row, style=style)
    console.print(table)
    for c in result.curves:
        first, last = c.losses[0], c.losses[-1]
        share = f", {last / first:.2%} of the start" if first and math.isfinite(last) else ""
        console.print(Text.assemble((f"{c.source}: ", "bold"), (c.verdict, "green" if c.verdict == "toward zero" else "bold red"),
                                    f" ({_value(first)} -> {_value(last)}{share}; step: {c.update})"))
    if len(result.curves) == 2:
        if result.parted is None:
            console.print(Text("the curves agree at every step", style="green"))
        else:
            why = "the losses differ before any step: the forward passes differ" if result.parted == 0 else (
                f"the same loss at step {result.parted - 1} but not after the update: the gradients differ")
            console.print(Text(f"the curves part at step {result.parted}: {why}; `layerdiff run` names the layer", style="bold red"))


def _curve_problems(result: Overfit) -> list[str]:
    problems = [f"{c.source} {c.verdict}" for c in result.curves if c.verdict != "toward zero"]
    if result.parted is not None:
        problems.append(f"the curves part at step {result.parted}")
    return problems
