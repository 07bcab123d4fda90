"""What the report says of each side on its own: its rounding against its float64 rerun (``--dtype native``), and
the weights it brought against the other's (``--weights own``). Printed after the comparison, as ``health_report``'s
summary is; computes nothing."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from layerdiff.report import FOLD_OVER, STYLE, describe_precision, number
from layerdiff.results import Comparison, Precision


def render_sides(result: Comparison, console: Console, show_all: bool = False) -> None:
    """Each rounded side's table, then the check of each side's own weights."""
    for p in result.precision:
        rounding_table(console, p, show_all)
    if result.weights is not None:
        checked_weights(console, result, show_all)


def rounding_table(console: Console, p: Precision, show_all: bool) -> None:
    """One rounded side, layer by layer: what each loses against its float64 twin (relative L2), what its precision
    explains, the excess (the twins' own difference there) and what has been lost by then."""
    console.print(Text(f"precision of {p.source} ({describe_precision(p)}), each layer against its float64 rerun on the same inputs", style="bold"))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("#", "layer", "tensor", "lost here", "explained", "excess", "cumulative", "verdict"):
        table.add_column(col, justify="left" if col in ("layer", "tensor", "verdict") else "right", no_wrap=col != "layer")
    worst = {layer.layer for layer in p.most_lost()}
    for i, layer in enumerate(p.layers):
        t = layer.worst
        if t is None or not (show_all or len(p.layers) <= FOLD_OVER or not t.ok or layer.layer in worst):
            continue
        style = "" if t.ok else STYLE["culprit"]
        cells = [number(x) for x in (t.lost, t.explained, t.excess, t.cumulative)]
        table.add_row(str(i), layer.layer, t.key, *cells, "ok" if t.ok else "culprit", style=style)
    console.print(table)
    most = ", ".join(f"{layer.layer} ({number(max(t.lost for t in layer.tensors))})" for layer in p.most_lost())
    console.print(f"{p.source} loses the most precision in: {most or 'no layer'}" + ("" if show_all or len(p.layers) <= FOLD_OVER else "; --all shows every layer"))


def checked_weights(console: Console, result: Comparison, show_all: bool) -> None:
    check = result.weights
    assert check is not None
    counts = Counter(p.verdict for p in check.params)
    console.print("weights: each side's own, compared through the mapping: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    for p in check.params:
        if show_all or len(check.params) <= FOLD_OVER or not p.ok:
            console.print(f"  {p.a} -> {p.b}  {p.verdict}" + (f" ({p.detail})" if p.detail else ""))
