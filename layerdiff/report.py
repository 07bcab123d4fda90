"""Render a comparison: the terminal report and the JSON document. Computes nothing of its own.

The sentences (verdict, divergences, tolerance…) are plain strings shared with the HTML report (``html.py``);
``health_report`` renders the checks of one network.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from layerdiff import precision
from layerdiff.records import RunInfo
from layerdiff.results import Comparison, Culprit, Divergence, Gap, LayerDiff, Precision, Rounding, TensorDiff
from layerdiff.sync import WeightLink
from layerdiff.weights import describe
from layerdiff.zoom import describe as describe_zoom

JSON_SCHEMA = 1
STYLE = {"culprit": "bold red", "inherited": "yellow", "differs": "bold red", "ok": "green"}
FOLD_OVER = 12  # longer tables are folded to their interesting rows unless show_all
PASS_NAMES = {"forward": "forward", "backward": "backward", "param_grad": "parameter gradient"}
DIRECTIONS = {"forward": "counted from the input", "backward": "counted from the output"}
SAID = ("shape", "missing gradient", "raised")  # problems a culprit's note says whole: no figures to print


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


def side(info: RunInfo) -> str:
    """A side's framework and precision, and its device when not the CPU (what the adapter recorded)."""
    device = info.settings.get("device", "")
    on = f", on {device}" if device and not device.startswith("cpu") else ""
    return f"{info.framework or '?'} {info.framework_version}, {info.compute_dtype}{on}"


def verdict(result: Comparison) -> str:
    if result.match:
        return "the same within tolerance"
    culprits = result.culprits
    n = 0 if culprits is None else len(culprits) + len(rounding_culprits(result))
    count = "" if culprits is None else f", {n} culprit{'s' if n != 1 else ''}"
    if result.weights is not None and not result.weights.ok and not _layers_differ(result):
        return "every layer agrees, but their weights differ"
    weights = "" if result.weights is None or result.weights.ok else "; their weights differ"
    return f"they diverge{count}{weights}"


def _layers_differ(result: Comparison) -> bool:
    return bool(result.forward or result.backward or result.culprits or rounding_culprits(result) or not all(l.ok for l in result.layers))


def rounding_culprits(result: Comparison) -> list[tuple[Precision, str, Rounding]]:
    """The layers that lose more than their precision explains: (side, layer, tensor)."""
    return [(p, layer, t) for p in result.precision for layer, t in precision.culprits(p)]


def rounding_line(p: Precision, layer: str, t: Rounding) -> str:
    what = "output" if t.key.startswith("output") else "input gradient" if t.key.startswith("grad_input") else f"gradient of {t.key}"
    lost = f"{t.nonfinite} entries NaN or infinite only" if t.nonfinite else f"{number(t.lost)} (relative L2)"
    return (
        f"{p.source}'s {layer} {what} is {lost} off a float64 rerun of the same layer on the same inputs, more than "
        f"{describe_precision(p)} explains ({number(t.explained)}), while the float64 reruns of both sides agree there: a "
        "precision problem (an overflow, a cancellation, a sum accumulated in low precision), not the code."
    )


def describe_precision(p: Precision) -> str:
    return p.dtype + (f" with {p.matmul} matrix products" if p.matmul else "")


def weight_lines(result: Comparison) -> list[str]:
    """Each parameter the two sides hold differently (``--weights own``), as a sentence."""
    check = result.weights
    if check is None:
        return []
    # Layers that agree on these inputs leave two readings: a layout or gate order the mapping does not know, or a
    # weight these inputs do not reach (an embedding's row). Which one, only the user knows.
    why = "" if _layers_differ(result) else " Every layer agrees on these inputs: either the two files lay it out " \
        "differently (declare it with param_map or layouts), or these inputs do not reach it."
    return [f"{describe(p, check)}.{why}" for p in check.params if not p.ok]


def divergence(d: Divergence | None, pass_: str) -> str:
    if d is None:
        return "no divergence"
    text = f"first divergence at {where(d.layer_a, d.layer_b)} ({DIRECTIONS[pass_]}): {d.tensor}, "
    if d.problem in SAID and d.note:
        return text + d.note
    text += f"max abs {number(d.max_abs)}, max rel {number(d.max_rel)}"
    return text + (f" ({d.note})" if d.note else "")


def culprit_line(c: Culprit) -> str:
    place = where(c.layer_a, c.layer_b)
    if c.gap is not None:  # a gap named by its module says where in it; one named "between" says it whole
        place = between(c.gap) if c.layer_a.startswith("between ") else f"{place} ({between(c.gap)})"
    if c.problem in SAID and c.note:
        return f"{place} [{PASS_NAMES[c.pass_]}] {c.note}"
    return f"{place} [{PASS_NAMES[c.pass_]}] {c.tensor}: max rel {number(c.max_rel)} > tolerance {number(c.tol)}"


def between(gap: Gap) -> str:
    """Code between captured layers, with the layers only one side records there: "between fc1 and fc2 (b: act)"."""
    unmatched = "; ".join(f"{s}: {', '.join(names)}" for s, names in (("a", gap.only_a), ("b", gap.only_b)) if names)
    if gap.after[0] == gap.after[1] and gap.before[0] == gap.before[1]:
        return f"between {gap.after[0]} and {gap.before[0]}" + (f" ({unmatched})" if unmatched else "")
    return f"between {where(*gap.after)} and {where(*gap.before)}" + (f"; there only {unmatched}" if unmatched else "")


def warnings(result: Comparison, findings: bool = True) -> list[str]:
    """What is wrong besides numbers: no replay, where NaN/Inf first appears, differences of form; with ``findings``,
    the weights that differ and the layers that lose more than their precision explains (the terminal report shows
    those beside the culprits)."""
    lines = [f"weights: {w}" for w in weight_lines(result)] if findings else []
    lines += [f"precision: {rounding_line(*r)}" for r in rounding_culprits(result)] if findings else []
    if result.culprits is None and not result.match:
        lines.append("two dumps: no replay, so no culprits; compare a dump against a model file to isolate them")
    for side_, origin in result.nonfinite.items():
        for direction, layer in origin.items():
            if layer:
                source = result.source_a if side_ == "a" else result.source_b
                lines.append(f"NaN/Inf: first produced in {source} by '{layer}' ({direction}: finite in, non-finite out)")
    return lines + [f"structure: {line}" for line in result.structure]


def fused(result: Comparison) -> list[str]:
    """The runs of layers aligned as one, each said once: what the other side computes in one layer."""
    lines = []
    for side, runs, source, other in (("a", result.fused_a, result.source_a, result.source_b), ("b", result.fused_b, result.source_b, result.source_a)):
        for run in runs:
            partner = next((l.layer_b if side == "a" else l.layer_a for l in result.layers if (l.layer_a if side == "a" else l.layer_b) == run), "?")
            names = run.split("+")
            lines.append(f"fused: {source}'s {', '.join(names)} are {other}'s {partner}, one layer (its output equals {names[-1]}'s)")
    return lines


def tolerance(result: Comparison) -> str:
    def noise(info: RunInfo) -> str:
        return "not measured" if info.run_to_run is None else number(info.run_to_run)

    rule = f"fixed {result.fixed_tol:g}" if result.fixed_tol is not None else "noise floor of each layer"
    if result.precision:
        sides = " and ".join(p.source for p in result.precision)
        rule += f", between the float64 reruns; the rounding of {sides} against what its precision explains"
    return f"tolerance: {rule}; run-to-run noise: a {noise(result.info_a)}, b {noise(result.info_b)}"


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
    for line in weight_lines(result):
        grid.add_row(Text("weights", style="bold red"), line)
    for c in result.culprits or []:
        text = Text(culprit_line(c))
        text.stylize("bold", 0, len(where(c.layer_a, c.layer_b)))
        grid.add_row(Text("culprit", style="bold red"), text)
        if c.hint:
            grid.add_row("  hint", c.hint)
        if c.note and c.problem not in SAID:
            grid.add_row("  note", c.note)
    for p, name, t in rounding_culprits(result):
        grid.add_row(Text("culprit", style="bold red"), Text(f"{name} ({p.side}) [precision] {t.key}: lost {number(t.lost)} > explained {number(t.explained)}", style="bold"))
        grid.add_row("  hint", rounding_line(p, name, t))
    for z in result.zooms:
        grid.add_row(Text("zoom", style="bold"), describe_zoom(z))
    for layer in result.layers:
        for line in layer.notes:
            grid.add_row("note", f"{where(layer.layer_a, layer.layer_b)}: {line}")
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
    for name, source, info in (("a", result.source_a, result.info_a), ("b", result.source_b, result.info_b)):
        sides.add_row("layerdiff" if name == "a" else "", f"{name}:", Text(source, style="bold"), f"({side(info)})")
    console.print(sides)
    console.print(Text(f"result: {verdict(result)}", style="bold green" if result.match else "bold red"))
    console.print(_summary(result))
    for line in warnings(result, findings=False):
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
    for line in fused(result):
        console.print(line)
    if links is not None and result.weights is None:  # each side's own weights: sides_report lists their check
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
        for w in links:
            if w.note:  # a guess, or a gradient found by shape: never folded away
                console.print(f"  {w.describe()}")
        console.print(Text("  (--all lists them)" if not any(w.note for w in links) else "  (--all lists the others)", style="dim"))


from layerdiff.report_json import plain as plain, to_json as to_json  # noqa: E402  (re-exported: callers read the report's forms here)
