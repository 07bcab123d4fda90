"""The HTML report: one self-contained file, the plots inlined as PNG, the style inline, nothing fetched.

Renders; computes nothing: the sentences come from ``report``, the figures from ``plots``. A Content-Security-Policy
forbids every network request, so a report that opens without errors needs nothing but itself.
"""

from __future__ import annotations

import base64
import os
import time
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from layerdiff import __version__, files, plots, report
from layerdiff.results import Comparison, LayerDiff, TensorDiff
from layerdiff.step_results import Training
from layerdiff.errors import ReportError
from layerdiff.sync import WeightLink

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from layerdiff.api import Result
    from layerdiff.steps_report import StepsResult

POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0 auto;
       max-width: 1180px; padding: 1.2em 2em 3em; }
h1 { font-size: 1.5em; margin: 0 0 .2em; } h2 { font-size: 1.2em; margin: 1.6em 0 .5em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1em; margin: 1em 0 .3em; }
code, td.num, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .9em; }
.sides { color: #555; margin: 0; }
.banner { font-size: 1.25em; font-weight: 600; padding: .5em .8em; border-radius: 6px; margin: .8em 0; }
.banner.diverge { background: #fdecea; color: #b71c1c; } .banner.match { background: #e8f5e9; color: #1b5e20; }
.culprit-card { border-left: 4px solid #c62828; padding: .2em 0 .2em 1em; margin: 1em 0 1.6em; }
.hint { background: #fff8e1; padding: .4em .7em; border-radius: 4px; }
.warning { color: #8a5a00; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0; }
table { border-collapse: collapse; font-size: .88em; }
th, td { padding: .22em .6em; text-align: right; border-bottom: 1px solid #eee; white-space: nowrap; }
th { background: #fafafa; position: sticky; top: 0; } th.group { text-align: center; }
td.name, th.name { text-align: left; }
tr.culprit td { background: #fdecea; } td.culprit { color: #b71c1c; font-weight: 600; }
td.inherited, td.differs { color: #8a5a00; }
td.bad { color: #b71c1c; font-weight: 600; }
.scroll { overflow-x: auto; }
footer { color: #888; font-size: .85em; margin-top: 3em; }
"""


def render(result: Result) -> str:
    """The whole report as one HTML document.

    Raises:
        ReportError: matplotlib is missing.
    """
    c = result.comparison
    title = f"layerdiff: {c.source_a} vs {c.source_b}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        "<header><h1>layerdiff</h1>",
        f'<p class="sides">a: <b>{escape(c.source_a)}</b> ({escape(report.side(c.info_a))}) &nbsp;vs&nbsp; '
        f"b: <b>{escape(c.source_b)}</b> ({escape(report.side(c.info_b))})</p></header>",
        f'<div class="banner {"match" if c.match else "diverge"}">{escape(report.verdict(c))}</div>',
        _culprits(c),
        "<h2>First divergences</h2><ul>",
        *(f"<li><b>{p}</b>: {escape(report.divergence(d, p))}</li>" for p, d in (("forward", c.forward), ("backward", c.backward))),
        *(f'<li class="warning">{escape(line)}</li>' for line in report.warnings(c)),
        "</ul>",
        "<h2>Error against depth</h2>",
        _img(plots.depth(c), "error against depth, forward and backward"),
        "<h2>Layers</h2>",
        _layers(c),
        _unmatched(c),
        "<h2>Parameter mapping</h2>",
        _mapping(result.links, result.weights_from),
        "<h2>Feed and tolerance</h2><ul>",
        *(f"<li>{escape(note)}</li>" for note in result.notes),
        f"<li>{escape(report.tolerance(c))}</li>",
        *(f"<li>dump: <code>{escape(path)}</code></li>" for path in result.dumps),
        "</ul>",
        f"<footer>layerdiff {escape(__version__)}, {time.strftime('%Y-%m-%d %H:%M')}. The same comparison as JSON: "
        "<code>--json</code>.</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write(result: Result, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Render and write the report atomically.

    Raises:
        ReportError: ``path`` exists (without ``force``) or cannot be written, or matplotlib is missing.
    """
    files.check(path, force, ReportError, "choose another path")
    text = render(result)
    with files.replacing(path, force, ReportError) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _img(fig: Figure, alt: str) -> str:
    data = base64.b64encode(plots.image(fig)).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _culprits(c: Comparison) -> str:
    if c.culprits is None:
        return ""
    if not c.culprits:
        return "<h2>Culprits</h2><p>None: every layer computes the same given the same inputs.</p>"
    cards = []
    for k in c.culprits:
        fig = plots.culprit(k, c.source_a, c.source_b)
        picture = _img(fig, f"where {k.layer_a} differs") if fig is not None else ""
        hint = f'<p class="hint">hint: {escape(k.hint)}</p>' if k.hint else ""
        cards.append(
            f'<div class="culprit-card"><h3>culprit {escape(report.culprit_line(k))}</h3>'
            f'<p class="mono">max abs {report.number(k.max_abs)}</p>{hint}{picture}</div>'
        )
    return "<h2>Culprits</h2>" + "".join(cards)


def _cell(t: TensorDiff | None, field: str) -> str:
    if t is None:
        return '<td class="num">-</td>'
    text = "shape" if t.problem == "shape" else report.number(getattr(t, field))
    return f'<td class="num{"" if t.ok else " bad"}">{text}</td>'


def _layers(c: Comparison) -> str:
    head = (
        '<div class="scroll"><table><thead><tr><th colspan="3"></th><th class="group" colspan="4">forward</th>'
        '<th class="group" colspan="6">backward</th></tr><tr><th>#</th><th class="name">layer (a)</th>'
        '<th class="name">layer (b)</th><th>out abs</th><th>out rel</th><th>local</th><th class="name">verdict</th>'
        "<th>grad abs</th><th>grad rel</th><th>local</th><th>param rel</th><th>local</th>"
        '<th class="name">verdict</th></tr></thead><tbody>'
    )
    rows = [_row(i, layer) for i, layer in enumerate(c.layers)]
    return head + "".join(rows) + "</tbody></table></div>"


def _row(i: int, layer: LayerDiff) -> str:
    out, grad, params = layer.worst("forward"), layer.worst("backward"), layer.worst("params")
    cells = [
        f'<td class="num">{i}</td><td class="name" title="{escape(layer.kind_a)}">{escape(layer.layer_a)}</td>',
        f'<td class="name" title="{escape(layer.kind_b)}">{escape(layer.layer_b)}</td>',
        _cell(out, "max_abs"), _cell(out, "max_rel"), _cell(layer.worst("forward", True), "max_rel"),
        _verdict(layer.verdict_in("forward")),
        _cell(grad, "max_abs"), _cell(grad, "max_rel"), _cell(layer.worst("backward", True), "max_rel"),
        _cell(params, "max_rel"), _cell(layer.worst("params", True), "max_rel"),
        _verdict(layer.verdict_in("backward")),
    ]
    return f'<tr class="{layer.verdict}">' + "".join(cells) + "</tr>"


def _verdict(verdict: str) -> str:
    return f'<td class="name {verdict}">{verdict}</td>'


def _unmatched(c: Comparison) -> str:
    lines = [(c.source_a, c.only_a), (c.source_b, c.only_b)]
    return "".join(f"<p>only in {escape(source)}: {escape(', '.join(names))}</p>" for source, names in lines if names)


def _mapping(links: list[WeightLink] | None, weights_from: str) -> str:
    if links is None:
        return "<p>None: two dumps compared as recorded.</p>"
    rows = "".join(
        f'<tr><td class="name mono">{escape(w.src)}</td><td class="mono">{w.src_shape}</td><td class="name mono">{escape(w.dst)}</td>'
        f'<td class="mono">{w.dst_shape}</td><td class="name">{w.moved}</td><td class="name">{w.how}</td></tr>'
        for w in links
    )
    return (
        f"<p>{len(links)} tensors copied from <b>{escape(weights_from)}</b>.</p><div class=\"scroll\"><table><thead><tr>"
        '<th class="name">a</th><th>shape</th><th class="name">b</th><th>shape</th><th class="name">moved</th>'
        f'<th class="name">paired by</th></tr></thead><tbody>{rows}</tbody></table></div>'
    )


def render_steps(result: StepsResult) -> str:
    """Training steps compared, as one HTML document: the verdict, the step's culprits, the error per step (how the
    gap grows, free-running), one row per step, and the parting step's layers when they part.

    Raises:
        ReportError: matplotlib is missing.
    """
    from layerdiff import steps_report

    t = result.training
    parting = t.steps[t.parted - 1] if t.parted is not None else None
    layers = parting.comparison if parting is not None and not parting.layers_match else None
    cards = [
        f'<div class="culprit-card"><h3>culprit {escape(steps_report.culprit_line(c))}</h3>'
        + (f"<p>state: {escape(c.state)}</p>" if c.state else "")
        + (f'<p class="hint">hint: {escape(c.hint)}</p>' if c.hint else "")
        + "</div>"
        for c in (parting.culprits if parting is not None else [])
    ]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">',
        f"<title>{escape(f'layerdiff: {t.source_a} vs {t.source_b}, {len(t.steps)} steps')}</title><style>{CSS}</style></head><body>",
        "<header><h1>layerdiff</h1>",
        f'<p class="sides">a: <b>{escape(t.source_a)}</b> ({escape(t.optimizer_a)}) &nbsp;vs&nbsp; '
        f"b: <b>{escape(t.source_b)}</b> ({escape(t.optimizer_b)})</p></header>",
        f'<div class="banner {"match" if t.match else "diverge"}">{escape(steps_report.verdict(t))}</div>',
        ("<h2>Culprits</h2>" + "".join(cards)) if cards else "",
        _culprits(layers) if layers is not None else "",
        "<h2>Error per step</h2>",
        _img(plots.per_step(t), "error per training step"),
        _steps_table(t),
        "<ul>" + "".join(f'<li class="warning">{escape(n)}</li>' for n in t.notes) + "</ul>",
        *((f"<h2>Step {parting.step}, layer by layer</h2>", _img(plots.depth(layers), "error against depth"), _layers(layers))
          if layers is not None and parting is not None else ()),
        "<h2>Feed</h2><ul>",
        *(f"<li>{escape(note)}</li>" for note in result.notes),
        *(f"<li>dump: <code>{escape(path)}</code></li>" for path in result.dumps),
        "</ul>",
        f"<footer>layerdiff {escape(__version__)}, {time.strftime('%Y-%m-%d %H:%M')}. As JSON: <code>--json</code>.</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _steps_table(t: Training) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("step", "loss a", "loss b", "layers", "update", "state", "buffers"))
    rows = []
    for s in t.steps:
        cells = [str(s.step), *("-" if x is None else f"{x:.6g}" for x in (s.loss_a, s.loss_b))]
        cells += [report.number(max(s.forward, s.backward, s.params))]
        cells += [report.number(s.worst(w)) if getattr(s, w) else "-" for w in ("updates", "state", "buffers")]
        rows.append(f'<tr class="{"culprit" if s.parted else ""}">' + "".join(f'<td class="num">{escape(c)}</td>' for c in cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def write_steps(result: StepsResult, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """``render_steps``, written atomically (as ``write``)."""
    files.check(path, force, ReportError, "choose another path")
    text = render_steps(result)
    with files.replacing(path, force, ReportError) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
