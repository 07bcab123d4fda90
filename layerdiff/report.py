"""Render results: a comparison (a terminal report and a JSON document), and gradcheck, inspect and overfit.
Computes nothing of its own.

The sentences (verdict, divergences, tolerance…) are plain strings shared with the HTML report (``html.py``).
"""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import fields, is_dataclass
from typing import Any, Callable, Iterable

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
FOLD_OVER = 12  # longer tables are folded to their interesting rows unless show_all
PASS_NAMES = {"forward": "forward", "backward": "backward", "param_grad": "parameter gradient"}
DIRECTIONS = {"forward": "counted from the input", "backward": "counted from the output"}


def number(x: float | None) -> str:
    """An error as the reports print it."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if math.isinf(x) or math.isnan(x):
        return str(x)
    return f"{x:.1e}"


def where(layer_a: str, layer_b: str) -> str:
    """A layer as both sides name it."""
    return layer_a if layer_a == layer_b or not layer_b else f"{layer_a} (b: {layer_b})"


def side(meta: dict[str, Any]) -> str:
    return f"{meta.get('framework', '?')} {meta.get('framework_version', '')}, {meta.get('compute_dtype', '?')}"


def verdict(result: Comparison) -> str:
    if result.match:
        return "the same within tolerance"
    culprits = result.culprits
    count = "" if culprits is None else f", {len(culprits)} culprit{'s' if len(culprits) != 1 else ''}"
    return f"they diverge{count}"


def divergence(d: Divergence | None, pass_: str) -> str:
    if d is None:
        return "no divergence"
    text = f"first divergence at {where(d.layer_a, d.layer_b)} ({DIRECTIONS[pass_]}): {d.tensor}, "
    text += f"max abs {number(d.max_abs)}, max rel {number(d.max_rel)}"
    return text + (f" ({d.note})" if d.note else "")


def culprit_line(c: Culprit) -> str:
    return f"{where(c.layer_a, c.layer_b)} [{PASS_NAMES[c.pass_]}] {c.tensor}: max rel {number(c.max_rel)} > tolerance {number(c.tol)}"


def warnings(result: Comparison) -> list[str]:
    """What is wrong besides numbers: no replay, where NaN/Inf first appears, differences of form."""
    lines = []
    if result.culprits is None and not result.match:
        lines.append("two dumps: no replay, so no culprits; compare a dump against a model file to isolate them")
    for side_, origin in result.nonfinite.items():
        for direction, layer in origin.items():
            if layer:
                source = result.source_a if side_ == "a" else result.source_b
                lines.append(f"NaN/Inf: first produced in {source} by '{layer}' ({direction}: finite in, non-finite out)")
    return lines + [f"structure: {line}" for line in result.structure]


def tolerance(result: Comparison) -> str:
    def noise(meta: dict[str, Any]) -> str:
        value = meta.get("run_to_run", "-")
        return number(value) if isinstance(value, float) else str(value)

    rule = f"fixed {result.fixed_tol:g}" if result.fixed_tol is not None else "noise floor of each layer"
    return f"tolerance: {rule}; run-to-run noise: a {noise(result.meta_a)}, b {noise(result.meta_b)}"


def _cell(t: TensorDiff | None, field: str) -> Text:
    if t is None:
        return Text("-", style="dim")
    if t.problem == "shape":
        return Text("shape", style="bold red")
    return Text(number(getattr(t, field)), style="" if t.ok else "bold red")


def _summary(result: Comparison) -> Table:
    """Culprits, hints and first divergences, in two columns so that a wrapped line keeps its indent."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(ratio=1)
    for c in result.culprits or []:
        text = Text(culprit_line(c))
        text.stylize("bold", 0, len(where(c.layer_a, c.layer_b)))
        grid.add_row(Text("culprit", style="bold red"), text)
        if c.hint:
            grid.add_row("  hint", c.hint)
    for pass_, d in (("forward", result.forward), ("backward", result.backward)):
        grid.add_row(pass_, Text(divergence(d, pass_), style="green" if d is None else ""))
    return grid


def shown_rows(result: Comparison, show_all: bool = False) -> list[int | range]:
    """The table rows to print, in execution order: every row of a short table or with ``show_all``; else the
    culprits, the first divergences and their neighbours (the first and last rows when there are none), with a
    ``range`` for each run of hidden rows.

    >>> from layerdiff.compare import LayerDiff
    >>> layers = [LayerDiff(f"l{i}", f"l{i}", "", "", verdict="culprit" if i == 7 else "ok") for i in range(20)]
    >>> shown_rows(Comparison("a", "b", layers, None, None, [], {}, [], [], [], {}, {}, None, None, None))
    [range(0, 6), 6, 7, 8, range(9, 20)]
    """
    n = len(result.layers)
    if show_all or n <= FOLD_OVER:
        return list(range(n))
    firsts = {(d.layer_a, d.layer_b) for d in (result.forward, result.backward) if d is not None}
    marked = [i for i, l in enumerate(result.layers) if l.verdict == "culprit" or (l.layer_a, l.layer_b) in firsts]
    keep = {k for i in marked for k in (i - 1, i, i + 1) if 0 <= k < n} or {0, 1, 2, n - 3, n - 2, n - 1}
    rows: list[int | range] = []
    for i in range(n):
        last = rows[-1] if rows else None
        if i in keep:
            rows.append(i)
        elif isinstance(last, range):
            rows[-1] = range(last.start, i + 1)
        else:
            rows.append(range(i, i + 1))
    return rows


def _table(
    pass_: str, columns: list[str], layers: list[LayerDiff], rows: list[int | range], cells: Callable[[LayerDiff], list[Text]]
) -> Table:
    title = "forward, from the input" if pass_ == "forward" else "backward, from the output"
    table = Table(box=None, pad_edge=False, header_style="bold", title=title, title_justify="left", title_style="bold")
    for col in ["#", "layer", *columns, "verdict"]:
        table.add_column(col, justify="left" if col in ("layer", "verdict") else "right", no_wrap=col != "layer",
                         overflow="fold")
    for i in rows:
        if isinstance(i, range):
            verdicts = Counter(layers[k].verdict_in(pass_) for k in i)
            table.add_row("…", ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())), style="dim")
            continue
        layer = layers[i]
        verdict_ = layer.verdict_in(pass_)
        style = STYLE[verdict_] if verdict_ != "ok" else ""
        table.add_row(str(i), where(layer.layer_a, layer.layer_b), *cells(layer), verdict_, style=style)
    return table


def _forward_table(result: Comparison, rows: list[int | range]) -> Table:
    def cells(layer: LayerDiff) -> list[Text]:
        return [_cell(layer.worst("forward"), "max_rel"), _cell(layer.worst("forward", local=True), "max_rel")]

    return _table("forward", ["out rel", "local"], result.layers, rows, cells)


def _backward_table(result: Comparison, rows: list[int | range]) -> Table:
    def cells(layer: LayerDiff) -> list[Text]:
        return [_cell(layer.worst(what, local), "max_rel") for what in ("backward", "params") for local in (False, True)]

    return _table("backward", ["grad rel", "local", "param rel", "local"], result.layers, rows[::-1], cells)


def render(
    result: Comparison,
    console: Console,
    *,
    links: list[WeightLink] | None = None,
    weights_from: str = "",
    notes: Iterable[str] = (),
    dumps: Iterable[str] = (),
    show_all: bool = False,
) -> None:
    """Print the report: the verdict and culprits first, the tables (folded unless ``show_all``), then how both
    sides were fed."""
    sides = Table.grid(padding=(0, 1))
    for name, source, meta in (("a", result.source_a, result.meta_a), ("b", result.source_b, result.meta_b)):
        sides.add_row("layerdiff" if name == "a" else "", f"{name}:", Text(source, style="bold"), f"({side(meta)})")
    console.print(sides)
    console.print(Text(f"result: {verdict(result)}", style="bold green" if result.match else "bold red"))
    console.print(_summary(result))
    for line in warnings(result):
        console.print(Text(line, style="yellow"))
    rows = shown_rows(result, show_all)
    console.print(_forward_table(result, rows))
    console.print(_backward_table(result, rows))
    hidden = sum(len(r) for r in rows if isinstance(r, range))
    if hidden:
        console.print(Text(f"{hidden} of {len(result.layers)} rows hidden; --all shows them", style="dim"))
    if result.only_a:
        console.print(f"only in {result.source_a}: {', '.join(result.only_a)}")
    if result.only_b:
        console.print(f"only in {result.source_b}: {', '.join(result.only_b)}")
    if links is not None:
        _weights(console, links, weights_from, show_all)
    for note in notes:
        console.print(f"feed: {note}")
    console.print(tolerance(result))
    for path in dumps:
        console.print(f"dump: {path}")


def _weights(console: Console, links: list[WeightLink], weights_from: str, show_all: bool) -> None:
    moved = sum(w.axes is not None for w in links)
    console.print(f"weights: {len(links)} tensors copied from {weights_from}" + (f", {moved} transposed" if moved else ""))
    if show_all or len(links) <= FOLD_OVER:
        for w in links:
            console.print(f"  {w.describe()}")
    else:
        console.print(Text("  (--all lists them)", style="dim"))


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
        "a": {"source": result.source_a, "meta": result.meta_a, "loss": result.loss_a},
        "b": {"source": result.source_b, "meta": result.meta_b, "loss": result.loss_b},
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
            }
            for layer in result.layers
        ],
        "only_a": result.only_a,
        "only_b": result.only_b,
        "structure": result.structure,
        "weights": {
            "from": weights_from,
            "links": [
                {"a": w.src, "b": w.dst, "a_shape": w.src_shape, "b_shape": w.dst_shape, "transpose": w.axes, "by": w.how}
                for w in links or []
            ],
        },
        "feed": list(notes),
        "dumps": list(dumps),
    }


def _opt(c: Culprit | None, f: Any) -> Any:
    return None if c is None else f(c)


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
    return f"{x:.2e}" if math.isfinite(x) and x != 0 else number(x)


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
                                  f"analytic {_value(w.analytic)} (rel {number(w.rel)})")
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
                layer.name if j == 0 else "", tensor, str(len(c.points)), str(c.kinks or ""), number(w.rel) if w else "-",
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
        ratio = "w = 0" if p.ratio is None and p.weight_norm == 0 else number(p.ratio)
        row = [p.name, str(p.shape), number(p.weight_norm), number(p.grad_norm), ratio + (" (bias)" if p.bias and p.ratio is not None else "")]
        params.add_row(*row, *([number(p.update)] if h.lr is not None else []))
    console.print(params)
    layers = Table(box=None, pad_edge=False, header_style="bold")
    # ‖g‖ and rms of the gradient arriving at the output; zeros: its exact zeros; sat: saturated; off: inactive.
    for col in ("#", "layer", "kind", "act", "‖g‖", "rms", "zeros", "sat", "dead", "off"):
        layers.add_column(col, justify="left" if col in ("layer", "kind", "act") else "right")
    for layer in h.layers:
        layers.add_row(
            str(layer.index), layer.name, layer.kind, layer.activation, number(layer.grad_norm), number(layer.grad_rms), _pct(layer.zero_fraction),
            _pct(layer.saturated), _pct(layer.dead), _pct(layer.inactive),
        )
    console.print(layers)
    if h.depth_ratio is not None and h.depth_span is not None:
        console.print(f"gradient RMS, first layer over last: {number(h.depth_ratio)} ({h.depth_span[0]} / {h.depth_span[1]})")
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
    spread = f"‖grad‖/‖w‖ {number(min(ratios))}..{number(max(ratios))}" if ratios else "no weights"
    depth = f", gradient RMS first/last {number(h.depth_ratio)}" if h.depth_ratio is not None else ""
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
            row.append("-" if a is None or b is None else number(abs(a - b) / max(abs(a), abs(b), 1e-300)))
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
