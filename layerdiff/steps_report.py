"""Render training steps compared (``steps.train``): the terminal report and the JSON document; and the result the
API hands back. Computes nothing of its own: the layer-by-layer part of the step where they part is ``report``'s.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from layerdiff import report
from layerdiff.report import number, plain, where
from layerdiff.step_results import StepCulprit, StepDiff, Training
from layerdiff.sync import WeightLink

PARTS = {"optimizer": "the optimizer", "buffer": "a buffer update"}


def verdict(t: Training) -> str:
    if t.parted is None:
        return f"the same within tolerance over {len(t.steps)} step{'s' if len(t.steps) != 1 else ''} ({t.mode})"
    step = t.steps[t.parted - 1]
    found = [PARTS[c.part] for c in step.culprits]
    comparison = step.comparison
    if comparison is not None and comparison.culprits:
        first = comparison.culprits[0]
        found.insert(0, f"a layer ({where(first.layer_a, first.layer_b)}, {report.PASS_NAMES[first.pass_]})")
    elif not step.layers_match:
        found.insert(0, "the layers")
    if step.weights_apart:
        found.insert(0, f"the weights after step {step.step - 1}'s updates (max rel {number(step.weights)})")
    return f"they part at step {t.parted} of {t.requested} ({t.mode}): {', '.join(dict.fromkeys(found))}"


def culprit_line(c: StepCulprit) -> str:
    what = f"update of {where(c.name_a, c.name_b)}" if c.part == "optimizer" else where(c.name_a, c.name_b)
    kind = "parameter" if c.part == "optimizer" else "buffer"
    also = f"; also {len(c.others)} more {kind}{'s' if len(c.others) != 1 else ''}" if c.others else ""
    return f"step {c.step} {c.part}: {what}: max rel {number(c.max_rel)} > tolerance {number(c.tol)}{also}"


def _summary(t: Training) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(ratio=1)
    step = t.steps[t.parted - 1] if t.parted is not None else None
    for c in step.culprits if step is not None else []:
        grid.add_row(Text("culprit", style="bold red"), culprit_line(c))
        if c.state:
            grid.add_row("  state", c.state)
        if c.hint:
            grid.add_row("  hint", c.hint)
    comparison = step.comparison if step is not None else None
    for layer in comparison.culprits or [] if comparison is not None else []:
        grid.add_row(Text("culprit", style="bold red"), f"step {step.step if step else ''} layer: {report.culprit_line(layer)}")
        if layer.hint:
            grid.add_row("  hint", layer.hint)
    return grid


def _steps_table(t: Training) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    free = t.mode == "free-running"
    for col in ("step", "loss a", "loss b", *(["weights"] if free else []), "layers", "update", "state", "buffers", "verdict"):
        table.add_column(col, justify="left" if col == "verdict" else "right", no_wrap=True)
    for s in t.steps:
        cells = [str(s.step), _loss(s.loss_a), _loss(s.loss_b), *([number(s.weights)] if free else [])]
        cells += [number(max(s.forward, s.backward, s.params))]
        cells += [number(s.worst(w)) if getattr(s, w) else "-" for w in ("updates", "state", "buffers")]
        table.add_row(*cells, _step_verdict(s), style="bold red" if s.parted else "")
    return table


def _loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def _step_verdict(s: StepDiff) -> str:
    if s.drift:
        return "drift"
    parts = (["weights"] if s.weights_apart else []) + ([] if s.layers_match else ["layers"]) + [c.part for c in s.culprits]
    return ", ".join(dict.fromkeys(parts)) or "ok"


def render(t: Training, console: Console, *, links: list[WeightLink] | None = None, weights_from: str = "",
           notes: list[str] | None = None, dumps: list[str] | None = None, show_all: bool = False) -> None:
    """Print the report: the verdict and culprits first, one row per step, then the parting step layer by layer
    when its layers part."""
    last = next((s.comparison for s in reversed(t.steps) if s.comparison is not None), None)
    sides = Table.grid(padding=(0, 1))
    sides.add_column(no_wrap=True, justify="right")
    sides.add_column(ratio=1)
    width = max(len(t.source_a), len(t.source_b))
    for name, source in (("a", t.source_a), ("b", t.source_b)):
        info = "" if last is None else f" ({report.side(last.info_a if name == 'a' else last.info_b)})"
        sides.add_row("layerdiff a:" if name == "a" else "b:", Text.assemble((source.ljust(width), "bold"), info))
    sides.add_row("optimizer a:", t.optimizer_a)
    sides.add_row("b:", t.optimizer_b)
    console.print(sides)
    console.print(Text(f"result: {verdict(t)}", style="bold green" if t.match else "bold red"))
    console.print(_summary(t))
    console.print(_steps_table(t))
    for note in t.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    parting = t.steps[t.parted - 1] if t.parted is not None else None
    if parting is not None and parting.comparison is not None and not parting.layers_match:
        console.print(Text(f"step {parting.step}, layer by layer:", style="bold"))
        report.render(parting.comparison, console, links=links, weights_from=weights_from, show_all=show_all)
    elif links is not None:
        console.print(f"weights: {len(links)} tensors copied from {weights_from}" + ("" if t.mode == "free-running" else ", again before every step"))
    for note in notes or []:
        console.print(f"feed: {note}")
    for path in dumps or []:
        console.print(f"dump: {path}")


def to_json(t: Training, *, links: list[WeightLink] | None = None, weights_from: str = "", notes: list[str] | None = None,
            dumps: list[str] | None = None) -> dict[str, Any]:
    """The steps as a JSON-ready dict: ``kind`` "steps", one entry per step, and the parting step's layers as
    ``layerdiff run`` reports one iteration (``layers``)."""
    parting = t.steps[t.parted - 1] if t.parted is not None else None
    layers = None if parting is None or parting.comparison is None else report.to_json(parting.comparison, links=links, weights_from=weights_from)
    culprits = [dict(plain(c), part=c.part) for c in parting.culprits] if parting is not None else []
    if layers is not None:
        culprits = [dict(c, part="layer", step=parting.step) for c in layers["culprits"] or []] + culprits  # type: ignore[union-attr]
    return {
        "schema": report.JSON_SCHEMA,
        "kind": "steps",
        "match": t.match,
        "mode": t.mode,
        "steps_requested": t.requested,
        "parted": t.parted,
        "a": {"source": t.source_a, "optimizer": t.optimizer_a},
        "b": {"source": t.source_b, "optimizer": t.optimizer_b},
        "culprits": culprits,
        "steps": [{f.name: plain(getattr(s, f.name)) for f in fields(s) if f.name != "comparison"} for s in t.steps],
        "layers": layers,
        "notes": t.notes,
        "feed": list(notes or []),
        "dumps": list(dumps or []),
    }


@dataclass
class StepsResult:
    """Training steps compared, with what they were made from; ``str(result)`` is the terminal report."""

    training: Training
    links: list[WeightLink] | None = None
    weights_from: str = ""
    notes: list[str] = field(default_factory=list)
    dumps: list[str] = field(default_factory=list)

    @property
    def match(self) -> bool:
        return self.training.match

    def render(self, console: Console, show_all: bool = False) -> None:
        render(self.training, console, links=self.links, weights_from=self.weights_from, notes=self.notes, dumps=self.dumps, show_all=show_all)

    def json(self) -> dict[str, Any]:
        return to_json(self.training, links=self.links, weights_from=self.weights_from, notes=self.notes, dumps=self.dumps)

    def __str__(self) -> str:
        buffer = io.StringIO()
        self.render(Console(file=buffer, width=120, color_system=None))
        return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())

    def write_html(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """The report as one self-contained HTML file, with the plot of error per step; needs matplotlib."""
        from layerdiff import html

        return html.write_steps(self, path, force=force)

    def write_plot(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """The plot of error per step, in the format its suffix names (.png, .svg, .pdf)."""
        from layerdiff import plots

        return plots.write(plots.per_step(self.training), path, force=force)
