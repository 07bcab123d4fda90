"""Render the checks of one network: gradcheck, inspect and overfit, as the terminal shows them. Computes nothing:
the verdicts, counts and gaps come with the results (``results``).
"""

from __future__ import annotations

import io
import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from layerdiff.report import number
from layerdiff.results import Flag, GradCheck, Health, Overfit


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
    kinks = result.kinks
    kinked = f" ({kinks} coordinate{'s' if kinks != 1 else ''} at a kink, not judged)" if kinks else ""
    if result.passed:
        console.print(Text(f"result: every gradient checks{kinked}", style="bold green"))
    else:
        inherited = sum(layer.verdict == "inherited" for layer in result.layers)
        passed_on = f"; {inherited} layer{'s' if inherited != 1 else ''} before it inherit the error" if inherited else ""
        console.print(Text(f"result: wrong gradient in {', '.join(result.culprits)}{passed_on}{kinked}", style="bold red"))
    for layer in result.layers:
        if layer.verdict != "culprit":
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
        Text.assemble(("layerdiff overfit ", "bold"), f"{names}: {result.steps} steps of {_stepped(result)}, batch of {result.batch}")
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
            row.append(number(result.gaps[step]) if step < len(result.gaps) else "-")
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
            own = any(c.update != "sgd" for c in result.curves)
            why = "the losses differ before any step: the forward passes differ" if result.parted == 0 else (
                f"the same loss at step {result.parted - 1} but not after the update: the gradients "
                + ("or the optimizers differ (`layerdiff run --steps` says which)" if own else "differ"))
            console.print(Text(f"the curves part at step {result.parted}: {why}; `layerdiff run` names the layer", style="bold red"))


def _stepped(result: Overfit) -> str:
    """How the curves were trained: plain SGD, or each side's own optimizer."""
    if all(c.update == "sgd" for c in result.curves):
        return f"plain SGD, lr {result.lr:g}"
    return "each side's own optimizer (" + "; ".join(
        f"{c.source}: {'plain SGD, lr ' + format(result.lr, 'g') if c.update == 'sgd' else c.update}" for c in result.curves
    ) + ")"


def _curve_problems(result: Overfit) -> list[str]:
    problems = [f"{c.source} {c.verdict}" for c in result.curves if c.verdict != "toward zero"]
    if result.parted is not None:
        problems.append(f"the curves part at step {result.parted}")
    return problems
