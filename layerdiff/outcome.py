"""What a comparison hands back to its caller: the ``Comparison`` with what it was made from (the weight mapping,
the notes, the dumps, each side's health), rendered as the terminal report, as JSON, or written as HTML or a plot."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from layerdiff.health_report import render_health_summary
from layerdiff.report import plain, render, to_json
from layerdiff.results import Comparison, Health
from layerdiff.sides_report import render_sides
from layerdiff.sync import WeightLink


@dataclass
class Result:
    """A comparison with what it was made from; ``str(result)`` is the terminal report."""

    comparison: Comparison
    links: list[WeightLink] | None = None
    weights_from: str = ""
    notes: list[str] = field(default_factory=list)
    dumps: list[str] = field(default_factory=list)
    health: list[Health] = field(default_factory=list)  # per side, for ``run``

    @property
    def match(self) -> bool:
        return self.comparison.match

    def render(self, console: Console, show_all: bool = False) -> None:
        """Print the terminal report; long tables are folded to their interesting rows unless ``show_all``."""
        render(self.comparison, console, links=self.links, weights_from=self.weights_from, notes=self.notes, dumps=self.dumps, show_all=show_all)
        render_sides(self.comparison, console, show_all)
        for side in self.health:
            render_health_summary(side, console)

    def json(self) -> dict[str, Any]:
        report = to_json(self.comparison, links=self.links, weights_from=self.weights_from, notes=self.notes, dumps=self.dumps)
        if self.health:
            report["health"] = dict(zip("ab", (plain(h) for h in self.health)))
        return report

    def __str__(self) -> str:
        buffer = io.StringIO()
        self.render(Console(file=buffer, width=100, color_system=None))
        return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())

    def write_html(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the report as one self-contained HTML file (plots inlined); needs matplotlib.

        Raises:
            ReportError: ``path`` exists and not ``force``, cannot be written, or matplotlib is missing.
        """
        from layerdiff import html

        return html.write(self, path, force=force)

    def write_plot(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the plot of error against depth, in the format its suffix names (.png, .svg, .pdf).

        Raises:
            ReportError: as ``write_html``.
        """
        from layerdiff import plots

        return plots.write(plots.depth(self.comparison), path, force=force)
