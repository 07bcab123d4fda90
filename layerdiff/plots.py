"""Figures of a comparison, drawn with matplotlib (the ``report`` extra), imported only when a figure is asked for.

Draws what the comparison computed; computes nothing: the errors per layer come from ``LayerDiff.worst``, the
maps of where a culprit differs from ``diagnose.error_map``. Figures are made without pyplot, so that no GUI
backend is chosen and no global state is left behind.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from layerdiff import files
from layerdiff.diagnose import error_map
from layerdiff.results import Comparison, Culprit
from layerdiff.step_results import Training
from layerdiff.errors import ReportError
from layerdiff.report import PASS_NAMES, where

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SIDE_COLORS = ("#1f77b4", "#e8710a")  # side A, side B
CULPRIT_COLOR = "#c62828"
HISTOGRAM_SAMPLE = 200_000  # values drawn per side at most: a histogram of more looks the same
NAMED_TICKS = 40  # up to this many layers, the x axis names them
DECADES = 3  # of relative error a heatmap's colours span, down from the largest
INSTALL = "pip install 'layerdiff[report]'"
FORMATS = ("png", "svg", "pdf")


def require_matplotlib() -> None:
    """Check that matplotlib can be imported, before any work whose result it would draw.

    Raises:
        ReportError: matplotlib is not installed, naming the extra that installs it.
    """
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise ReportError(f"HTML reports and plots need matplotlib, which is not installed. Install it with: {INSTALL}") from None


def depth(result: Comparison) -> Figure:
    """Error against depth: the forward pass above, the backward pass below, on a shared axis of layers in execution
    order; per layer the largest relative error of its outputs (forward) or gradients, cumulative (the plain run)
    and local (the teacher-forced replay), on a log scale, with the tolerance and the culprits marked.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 6.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    layers = result.layers
    x = np.arange(len(layers))
    floor = _floor(result)

    def series(what: str, local: bool = False, field: str = "max_rel") -> np.ndarray:
        worst = [layer.worst(what, local) for layer in layers]
        return np.array([np.nan if t is None else max(getattr(t, field), floor) for t in worst], dtype=float)

    panels = (
        (top, "forward", [("outputs", "forward", SIDE_COLORS[0])]),
        (bottom, "backward", [("input/output gradients", "backward", SIDE_COLORS[0]), ("parameter gradients", "params", SIDE_COLORS[1])]),
    )
    for ax, pass_, lines in panels:
        for label, what, color in lines:
            ax.plot(x, series(what), "o-", color=color, markersize=4, label=f"{label}, cumulative")
            if result.culprits is not None:
                ax.plot(x, series(what, local=True), "s--", color=color, markersize=3, alpha=0.8, label=f"{label}, local")
        ax.step(x, series(lines[0][1], field="tol"), where="mid", color="0.45", linestyle=":", label="tolerance")
        culprits = [i for i, layer in enumerate(layers) if layer.verdict_in(pass_) == "culprit"]
        for k, i in enumerate(culprits):
            ax.axvspan(i - 0.4, i + 0.4, color=CULPRIT_COLOR, alpha=0.15, label="culprit" if k == 0 else None)
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor / 3, top=max(ax.get_ylim()[1] * 10, 1.0))
        ax.set_ylabel("max relative error")
        direction = "from the input →" if pass_ == "forward" else "← from the output"
        ax.set_title(f"{pass_} pass ({direction})", loc="left", fontsize=11)
        ax.grid(True, which="major", axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if len(layers) <= NAMED_TICKS:
        bottom.set_xticks(x, [where(l.layer_a, l.layer_b) for l in layers], rotation=60, ha="right", fontsize=8)
    bottom.set_xlabel("layer, in execution order")
    fig.suptitle(f"{result.source_a} vs {result.source_b}: error against depth (zero drawn at {floor:.0e})", fontsize=11)
    return fig


def _floor(result: Comparison) -> float:
    """Where a zero error is drawn on the log axis: a decade under the smallest tolerance."""
    tols = [t.tol for layer in result.layers for t in layer.tensors + layer.local + layer.param_grads if t.tol > 0]
    return float(10.0 ** np.floor(np.log10(min(tols, default=1e-12)))) / 10


def culprit(c: Culprit, source_a: str, source_b: str) -> Figure | None:
    """Where a culprit's two values differ (a heatmap of the relative error; a grid of channel maps for a 4-D
    tensor) beside a histogram of both sides' values. None when its values are not kept or not alike in size."""
    if c.values is None or c.values[0].size != c.values[1].size or c.values[0].size < 2:
        return None
    a, b = c.values
    maps, labels = error_map(a, b)
    require_matplotlib()
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    outer = fig.add_gridspec(1, 2, width_ratios=(1.6, 1))
    cols = int(np.ceil(np.sqrt(len(maps))))
    rows = int(np.ceil(len(maps) / cols))
    grid = outer[0].subgridspec(rows, cols)
    finite = maps[np.isfinite(maps)]
    top = max(float(finite.max()) if finite.size else 1.0, c.tol * 10)
    # Within tolerance: grey. Above it, the colours span the top decades, where a pattern of wrong values shows.
    low = max(c.tol, top * 10.0**-DECADES)
    norm = LogNorm(vmin=low, vmax=top)
    cmap = colormaps["magma_r"].with_extremes(bad="#e9e9e9", over="#00bcd4")
    image = None
    for k, (m, label) in enumerate(zip(maps, labels)):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        shown = np.where(m <= c.tol, np.nan, np.maximum(m, low))
        square = 0.25 <= m.shape[0] / m.shape[1] <= 4
        image = ax.imshow(shown, cmap=cmap, norm=norm, aspect="equal" if square else "auto", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if label:
            ax.set_title(label, fontsize=7, pad=2)
        if len(maps) == 1 and a.ndim <= 3:
            first = max(a.ndim - 2, 0)  # a 3-D tensor is drawn by its last two axes
            ax.set_xlabel(f"axis {a.ndim - 1} ({a.shape[-1]})", fontsize=8)
            if a.ndim >= 2:
                ax.set_ylabel(f"axis {first} ({a.shape[first]})", fontsize=8)
    if image is not None:
        bar = fig.colorbar(image, ax=fig.axes, location="left", shrink=0.9, extend="max")
        bar.set_label("relative error; grey: within tolerance,\ncyan: NaN/Inf on one side only", fontsize=8)
    hist = fig.add_subplot(outer[1])
    for values, name, color, style in ((a, source_a, SIDE_COLORS[0], "-"), (b, f"{source_b} (replayed)", SIDE_COLORS[1], "--")):
        flat = np.asarray(values, dtype=np.float64).ravel()
        flat = flat[np.isfinite(flat)][:: max(1, flat.size // HISTOGRAM_SAMPLE)]
        hist.hist(flat, bins=60, histtype="step", color=color, linestyle=style, linewidth=1.4, label=name)
    hist.set_title("values of both sides", fontsize=10)
    hist.legend(fontsize=8)
    shape = "×".join(str(d) for d in a.shape)
    reduced = f", largest over the {a.shape[0]} of the first axis" if a.ndim >= 3 and a.shape[0] > 1 else ""
    title = f"{where(c.layer_a, c.layer_b)} [{PASS_NAMES[c.pass_]}] {c.tensor} ({shape}): where the sides differ{reduced}"
    fig.suptitle(title, fontsize=10)
    return fig


def image(fig: Figure, format: str = "png") -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=format, dpi=100)
    return buffer.getvalue()


def format_of(path: str | os.PathLike[str]) -> str:
    """The image format a plot's file name asks for.

    Raises:
        ReportError: a suffix other than .png, .svg or .pdf.

    >>> format_of("depth.SVG")
    'svg'
    """
    format = Path(path).suffix.lstrip(".").lower()
    if format not in FORMATS:
        raise ReportError(f"{path}: cannot tell the plot's format from '{Path(path).suffix}'. Use .png, .svg or .pdf.")
    return format


def write(fig: Figure, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Save ``fig`` atomically, in the format its suffix names.

    Raises:
        ReportError: the suffix names no format (``format_of``), or ``path`` exists (without ``force``) or cannot
            be written.
    """
    data = image(fig, format_of(path))
    with files.replacing(path, force, ReportError) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def per_step(training: Training) -> Figure:
    """Error per training step, on a log scale: the loss, the layers (their largest max rel over both passes and
    the parameter gradients), the updates, the optimizer's state and the buffers; the step where they part marked.
    Free-running, it shows how the gap grows."""
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.subplots()
    steps = [s.step for s in training.steps]
    series = {
        "loss": [_gap(s.loss_a, s.loss_b) for s in training.steps],
        "weights (before the step)": [s.weights for s in training.steps],
        "layers": [max(s.forward, s.backward, s.params) for s in training.steps],
        "updates": [s.worst("updates") for s in training.steps],
        "optimizer state": [s.worst("state") for s in training.steps],
        "buffers": [s.worst("buffers") for s in training.steps],
    }
    values = [v for line in series.values() for v in line if v > 0 and np.isfinite(v)]
    floor = min(values, default=1e-16) / 10
    for (label, line), color in zip(series.items(), ("0.3", "#8c564b", SIDE_COLORS[0], SIDE_COLORS[1], "#2ca02c", "#9467bd")):
        if any(v > 0 for v in line) or label in ("loss", "layers"):
            ax.plot(steps, [max(v, floor) if np.isfinite(v) else np.nan for v in line], "o-", color=color, markersize=4, label=label)
    if training.parted is not None:
        ax.axvspan(training.parted - 0.4, training.parted + 0.4, color=CULPRIT_COLOR, alpha=0.15, label="they part")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("max relative error")
    ax.set_xticks(steps if len(steps) <= NAMED_TICKS else steps[:: max(1, len(steps) // 20)])
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"{training.source_a} vs {training.source_b}: error per step ({training.mode}; zero drawn at {floor:.0e})", fontsize=11)
    return fig


def _gap(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return float("nan")
    return abs(a - b) / max(abs(a), abs(b), 1e-300)
