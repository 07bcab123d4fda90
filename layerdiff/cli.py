"""The command line: parses, calls the API, prints. Exit 0: the same within tolerance (gradients right, healthy,
the loss goes to zero); 1: they diverge (a gradient wrong, a problem flagged); 2: could not compare (the reason on
one line); 3: a bug in layerdiff (its traceback above); 128 + the signal's number when stopped by one: 130 for
Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from contextlib import contextmanager
from dataclasses import fields
from typing import Any, Callable, Iterator

import click
from rich.console import Console

from layerdiff import api, files, signals, step_store, store
from layerdiff.errors import LayerdiffError, ReportError, out_of_memory, speaking_flags
from layerdiff.gradcheck import SAMPLES
from layerdiff.health import ACTIVATIONS
from layerdiff.progress import Progress
from layerdiff.health_report import render_result
from layerdiff.report import plain
from layerdiff.steps_report import StepsResult

EXIT_MATCH, EXIT_DIVERGE, EXIT_ERROR = 0, 1, 2
EXIT_BUG = 3  # layerdiff itself failed: never to be read as "they diverge"
EXIT_BROKEN_PIPE = 128 + 13  # the reader went away (`| head`), as the shell reports SIGPIPE
SEED_MAX = 2**63 - 1  # a dump records the seed as a 64-bit integer


def _positive(option: str, at_most: float | None = None, example: str = "") -> Callable[[click.Context, click.Parameter, float | None], float | None]:
    """A callback for a real-valued option that must be finite and above 0 (and at most ``at_most``)."""

    def check(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        if value is None:
            return None
        bound = f" and at most {at_most:g}" if at_most is not None else ""
        if not math.isfinite(value) or value <= 0 or (at_most is not None and value > at_most):
            raise click.BadParameter(f"{value} is not a {option}: give a finite number above 0{bound}, e.g. {example}.")
        return value

    return check


SEED = click.IntRange(0, SEED_MAX)


def _pairs(option: str) -> Callable[[click.Context, click.Parameter, tuple[str, ...]], dict[str, str]]:
    def parse(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
        mapping = {}
        for v in values:
            a, sep, b = v.partition("=")
            if not sep or not a or not b:
                raise click.BadParameter(f"'{v}' is not NAME_A=NAME_B, e.g. {option} fc3=head")
            mapping[a] = b
        return mapping

    return parse


def _globs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    return list(values)


def comparison_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(
        [
            click.option("--dtype", type=click.Choice(["float64", "native"]), default="float64", show_default=True,
                         help="float64: both sides cast to float64. native: each side in its own dtype, judged against its float64 rerun."),
            click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the generated inputs and upstream gradient."),
            click.option("--rtol", type=float, default=None, callback=_positive("tolerance", 1.0, "--rtol 1e-6"),
                         help="A fixed tolerance, above 0 and at most 1; by default each layer's noise floor, 64·eps·sqrt(n)."),
            click.option("--map", "layer_map", multiple=True, callback=_pairs("--map"), metavar="A=B",
                         help="Pair layer A of the first file with layer B of the second; 're:REGEX=REPLACEMENT' or "
                              "'prefix.*=other.*' pairs every layer it matches."),
            click.option("--param-map", "param_map", multiple=True, callback=_pairs("--param-map"), metavar="A=B",
                         help="Copy parameter A of the first file into parameter B of the second (patterns as for --map)."),
            click.option("--ignore", "ignore", multiple=True, callback=_globs, metavar="GLOB",
                         help="Leave layers that one side has and the other has not out of the alignment (a dropout)."),
            click.option("--weights", type=click.Choice(["a", "own"]), default="a", show_default=True,
                         help="a: the first file's weights copied into the second. own: each keeps its own, compared first."),
            click.option("--once", is_flag=True,
                         help="Run each side once: faster, but randomness left on (dropout) goes unnoticed."),
            click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
            click.option("--all", "show_all", is_flag=True, help="Print every row of long tables, and every weight."),
            click.option("--html", "html", default=None, metavar="FILE.html",
                         help="Also write a self-contained HTML report with plots (needs layerdiff[report])."),
            click.option("--plot", "plot", default=None, metavar="FILE.png",
                         help="Also write the plot of error against depth (.png, .svg or .pdf)."),
            click.option("--force", is_flag=True,
                         help="Replace existing dumps and reports; compare dumps whose hashes differ."),
            click.option("--zoom", "zoom", multiple=True, metavar="LAYER",
                         help="Run module LAYER (or A=B) operation by operation on both sides and name the first "
                              "operation that differs (repeatable; forward culprits are zoomed into anyway)."),
        ]
    ):
        f = decorator(f)
    return f


def _outputs(html: str | None, plot: str | None, force: bool) -> None:
    """Refuse a report that could not be written before the comparison runs, not after."""
    if html is None and plot is None:
        return
    from layerdiff import plots

    for path in (html, plot):
        if path is not None:
            files.check(path, force, ReportError, "choose another path")
    if plot is not None:
        plots.format_of(plot)
    plots.require_matplotlib()


def _report(result: api.Result | StepsResult, as_json: bool, show_all: bool, html: str | None, plot: str | None, force: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.json(), indent=2, default=str))
    else:
        result.render(Terminal(highlight=False), show_all=show_all)
    # Files are named on stderr: stdout stays the report (or the JSON) alone.
    if html is not None:
        click.echo(f"html: {result.write_html(html, force=force)}", err=True)
    if plot is not None:
        click.echo(f"plot: {result.write_plot(plot, force=force)}", err=True)
    sys.exit(EXIT_MATCH if result.match else EXIT_DIVERGE)


@contextmanager
def _progress_bar() -> Iterator[Progress | None]:
    """A bar on stderr while the long steps run; none when stderr is not a terminal."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
             console=console, transient=True) as bar:

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


class Terminal(Console):
    """rich's console, except that a reader going away (`| head`) is not rich's SystemExit(1), our "diverge"."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


class Commands(click.Group):
    """Turns the project's own errors into one line and exit code 2; a bug in layerdiff keeps its traceback and
    exits 3, so that a crash is never read as a divergence (exit 1). A signal stops it with 128 + its number."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """click's ``main``, with usage errors on one line (``error: …``, exit 2) as every other error is."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"error: {' '.join(exc.format_message().split())}{where}", err=True)
            sys.exit(EXIT_ERROR)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:  # Ctrl-C while click itself was reading the command line
            click.echo("error: interrupted (SIGINT)", err=True)
            sys.exit(128 + 2)
        sys.exit(code if isinstance(code, int) else EXIT_MATCH)

    def invoke(self, ctx: click.Context) -> Any:
        with signals.handled():
            try:
                try:
                    with speaking_flags():
                        return super().invoke(ctx)
                finally:
                    signals.checkpoint()  # a signal swallowed on the way (in a cleanup) still stops the command
            except KeyboardInterrupt as exc:
                code = exc.code if isinstance(exc, signals.Interrupted) else 128 + 2
                click.echo(f"error: interrupted ({exc if isinstance(exc, signals.Interrupted) else 'SIGINT'})", err=True)
                ctx.exit(code)
            except LayerdiffError as exc:
                if exc.details:
                    click.echo(exc.details, err=True)
                click.echo(f"error: {exc}", err=True)
                ctx.exit(EXIT_ERROR)
            except BrokenPipeError:
                sys.stdout = open(os.devnull, "w")  # nothing more can be printed; keep Python's exit flush quiet
                ctx.exit(EXIT_BROKEN_PIPE)
            except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
                raise
            except MemoryError:
                with speaking_flags():
                    click.echo(f"error: layerdiff ran out of memory {out_of_memory()}", err=True)
                ctx.exit(EXIT_ERROR)
            except Exception:
                traceback.print_exc()
                click.echo("error: layerdiff itself failed (the traceback above is a bug in layerdiff; please report it).", err=True)
                ctx.exit(EXIT_BUG)


@click.group(cls=Commands)
@click.version_option(package_name="layerdiff")
def main() -> None:
    """Find the layer where two implementations of the same network part ways."""


def dump_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(
        [
            click.option("--layers", "layers", multiple=True, metavar="GLOB",
                         help="Record only the layers whose names match (repeatable, e.g. 'blocks.1.*'), with their parameters."),
            click.option("--compression", default=None, metavar="gzip|lzf", help="Compress the dumps' datasets."),
        ]
    ):
        f = decorator(f)
    return f


@main.command()
@click.argument("file_a", metavar="A.py")
@click.argument("file_b", metavar="B.py")
@click.option("-o", "--out", default=None, help="Folder for the two dumps [default: a new layerdiff-out/run-N].")
@comparison_options
@dump_options
@click.option("--stats-only", is_flag=True,
              help="Dump statistics and a hash of every tensor; values only around the first divergences.")
@click.option("--skip-copied-weights", is_flag=True,
              help="Leave B's parameter values (copies of A's) out of its dump; their hashes stay.")
@click.option("--steps", type=int, default=None, metavar="K",
              help="Train K steps, each side with the optimizer its file declares; B re-synced to A before each step.")
@click.option("--free-running", is_flag=True, help="With --steps: each side trains on its own, never re-synced.")
@click.option("--lr", type=float, default=0.01, show_default=True,
              help="With --steps: the learning rate of plain SGD, for a side whose file declares no optimizer.")
def run(file_a: str, file_b: str, out: str | None, as_json: bool, show_all: bool, html: str | None, plot: str | None,
        layers: tuple[str, ...], **kw: Any) -> None:
    """Run both model files on the same weights, inputs and upstream gradient; dump and compare them."""
    _outputs(html, plot, kw["force"])
    with _progress_bar() as progress:
        kw["zoom"] = list(kw["zoom"]) or None
        result = api.run(file_a, file_b, out=out, progress=progress, layers=list(layers) or None, **kw)
    _report(result, as_json, show_all, html, plot, kw["force"])


@main.command()
@click.argument("x", metavar="X")
@click.argument("y", metavar="Y")
@comparison_options
def compare(x: str, y: str, as_json: bool, show_all: bool, html: str | None, plot: str | None, **kw: Any) -> None:
    """Compare X and Y, each a dump or a model file (a script runs with the dump's weights and inputs)."""
    _outputs(html, plot, kw["force"])
    with _progress_bar() as progress:
        kw["zoom"] = list(kw["zoom"]) or None
        result = api.compare_paths(x, y, progress=progress, **kw)
    _report(result, as_json, show_all, html, plot, kw["force"])


@main.command()
@click.argument("model_file", metavar="A.py")
@click.option("-o", "--out", required=True, help="The dump to write (.h5).")
@click.option("--weights-from", default=None, help="A dump whose weights, inputs and upstream gradient to use.")
@click.option("--dtype", type=click.Choice(["float64", "native"]), default="float64", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace the dump if it exists.")
@dump_options
def dump(model_file: str, out: str, weights_from: str | None, dtype: str, seed: int, force: bool, layers: tuple[str, ...],
         compression: str | None) -> None:
    """Capture one model file's iteration to an HDF5 dump."""
    path = api.dump(model_file, out, dtype=dtype, seed=seed, weights_from=weights_from, force=force,
                    layers=list(layers) or None, compression=compression)
    click.echo(f"wrote {path}")


@main.command()
@click.argument("path", metavar="DUMP.h5")
@click.option("--step", type=int, default=None, metavar="K", help="Of a dump of training steps: the step to list [default: the last].")
def show(path: str, step: int | None) -> None:
    """List a dump's metadata, layers and parameters."""
    count = step_store.steps_in(path) if store.is_dump(path) else 0
    if count:
        click.echo(f"steps: {count}, {step_store.describe(path)}")
    with (step_store.StepDump(path, step or count) if count else store.Dump(path)) as d:
        info = d.info
        listed = {f.name: getattr(info, f.name) for f in fields(info) if f.name != "settings"}
        for k, v in sorted({**dict(info.settings), **listed, "loss": d.loss}.items()):
            click.echo(f"{k}: {'not measured' if k == 'run_to_run' and v is None else v}")
        click.echo(f"layers ({len(d.layers)}, execution order):")
        for layer in d.layers:
            shapes = ", ".join(f"{k} {t.shape}" + (f" (stored {t.layout})" if t.layout else "") for k, t in layer.tensors.items())
            click.echo(f"  {layer.index:4d} {layer.name} ({layer.kind}): {shapes}")
        click.echo("parameters:")
        for name in d.param_names():
            p = d.spec(name)
            layout = p.layout.replace("?", " (guessed)") if p.layout else ""
            click.echo(f"  {name} {p.value.shape} {layout}".rstrip())



def _coordinates(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, list[tuple[int, ...]]]:
    found: dict[str, list[tuple[int, ...]]] = {}
    for v in values:
        name, sep, index = v.partition("=")
        try:
            coordinate = tuple(int(i) for i in index.split(","))
        except ValueError:
            coordinate = ()
        if not sep or not name or not coordinate:
            raise click.BadParameter(f"'{v}' is not NAME=I,J,..., e.g. --at fc1.W=3,7")
        if any(i < 0 for i in coordinate):
            raise click.BadParameter(f"'{v}': an index counts from 0, e.g. --at fc1.W=3,7")
        found.setdefault(name, []).append(coordinate)
    return found


def _activations(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    kinds = _pairs("--activation")(ctx, param, values)
    for layer, kind in kinds.items():
        if kind not in ACTIVATIONS:
            raise click.BadParameter(f"'{layer}={kind}': the kind must be one of {', '.join(ACTIVATIONS)}")
    return kinds


def _print(result: Any, as_json: bool, ok: bool) -> None:
    if as_json:
        click.echo(json.dumps(plain(result), indent=2))
    else:
        render_result(result, Terminal(highlight=False))
    sys.exit(EXIT_MATCH if ok else EXIT_DIVERGE)


@main.command()
@click.argument("model_file", metavar="MODEL.py")
@click.option("--samples", type=click.IntRange(0), default=SAMPLES, show_default=True,
              help="Random coordinates per tensor, beside the largest-gradient and zero-gradient ones.")
@click.option("--full", is_flag=True, help="Check every coordinate of every tensor.")
@click.option("--at", multiple=True, callback=_coordinates, metavar="NAME=I,J",
              help="Also check this coordinate of a parameter, or of a layer's input (by the layer's name).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the inputs and of the sampled coordinates.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def gradcheck(model_file: str, samples: int, full: bool, at: dict[str, list[tuple[int, ...]]], seed: int, as_json: bool) -> None:
    """Check every layer's and parameter's gradient against finite differences. Exit 1 when one is wrong."""
    result = api.gradcheck(model_file, samples=samples, full=full, at=at, seed=seed)
    _print(result, as_json, result.passed)


@main.command()
@click.argument("path", metavar="DUMP.h5")
@click.option("--lr", type=float, default=None, callback=_positive("learning rate", example="--lr 0.01"),
              help="Learning rate: report ‖Δw‖/‖w‖ of one SGD step.")
@click.option("--activation", "activations", multiple=True, callback=_activations, metavar="LAYER=KIND",
              help=f"Say which activation a layer applies ({', '.join(ACTIVATIONS)}) where its kind or name does not.")
@click.option("--allow-neg-inf", multiple=True, metavar="LAYER", help="A layer whose forward values may hold -inf (a mask).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def inspect(path: str, lr: float | None, activations: dict[str, str], allow_neg_inf: tuple[str, ...], as_json: bool) -> None:
    """One network's health from a dump (or a model file): gradient/weight ratios, vanishing and exploding
    gradients, NaN/Inf and where they start, saturation, dead ReLUs. Exit 1 when something is flagged."""
    result = api.inspect(path, lr=lr, activations=activations, allow_neg_inf=allow_neg_inf)
    _print(result, as_json, result.healthy)


@main.command()
@click.argument("file_a", metavar="A.py")
@click.argument("file_b", metavar="[B.py]", required=False)
@click.option("--steps", type=click.IntRange(1), default=200, show_default=True)
@click.option("--lr", type=float, default=0.1, show_default=True, callback=_positive("learning rate", example="--lr 0.1"))
@click.option("--batch", type=click.IntRange(1), default=2, show_default=True, help="How many of the inputs to train on.")
@click.option("--dtype", type=click.Choice(["float64", "native"]), default="float64", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--param-map", "param_map", multiple=True, callback=_pairs("--param-map"), metavar="A=B",
              help="Copy parameter A of the first file into parameter B of the second.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def overfit(file_a: str, file_b: str | None, as_json: bool, **kw: Any) -> None:
    """Train on a tiny batch with plain SGD: does the loss go toward zero? With B.py, both from the same weights,
    side by side, and the first step where they part. Exit 1 when a loss does not, or the curves part."""
    result = api.overfit(file_a, file_b, **kw)
    _print(result, as_json, result.ok)
