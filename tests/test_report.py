"""The reports people read: the terminal report at a glance, its JSON twin, the HTML file and the plots, and the
one-line errors when one of them cannot be written."""

import base64
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import layerdiff
from conftest import FIXTURES, one_error_line

MLP = FIXTURES / "mlp_numpy.py"
SIGMOID_BUG = FIXTURES / "bug_sigmoid_grad_preactivation.py"  # NumPy against NumPy: no torch to import
PADDING_BUG = FIXTURES / "bug_conv_padding_off_by_one.py"
PNG = b"\x89PNG\r\n\x1a\n"
NUMBER = re.compile(r"\d\.\de[+-]\d\d")


class Scale:
    def __init__(self, c=1.1, grad_factor=1.0):
        self.c, self.grad_factor = c, grad_factor

    def forward(self, x):
        return self.c * x

    def backward(self, dout):
        return self.grad_factor * self.c * dout


def deep(n=20, broken_at=None):
    return [Scale(grad_factor=2.0 if i == broken_at else 1.0) for i in range(n)]


def text(result, width=80, show_all=False):
    buffer = io.StringIO()
    result.render(Console(file=buffer, width=width, color_system=None), show_all=show_all)
    return buffer.getvalue()


def table_rows(report: str, title: str) -> list[str]:
    """The first cell of each row of one table: a layer index, or '…' for hidden rows."""
    rows = []
    for line in report.split(title, 1)[1].splitlines()[2:]:
        row = re.match(r"\s*(\d+|…)  ", line)
        if row is None:
            break
        rows.append(row.group(1))
    return rows


def test_long_tables_fold_to_the_culprit_and_its_neighbours():
    result = layerdiff.compare_models(deep(broken_at=10), deep(), input_shape=(4, 3))
    report = text(result)
    assert table_rows(report, "backward, from the output") == ["…", "11", "10", "9", "…"]
    assert table_rows(report, "forward, from the input") == ["…", "9", "10", "11", "…"]
    assert "…  8 ok" in report and "…  9 inherited" in report
    assert "17 of 20 rows hidden; --all shows them" in report


def test_all_shows_every_row():
    result = layerdiff.compare_models(deep(broken_at=10), deep(), input_shape=(4, 3))
    report = text(result, show_all=True)
    assert table_rows(report, "forward, from the input") == [str(i) for i in range(20)]
    assert "hidden" not in report


def test_a_long_table_without_divergence_shows_its_ends():
    report = text(layerdiff.compare_models(deep(), deep(), input_shape=(4, 3)))
    assert table_rows(report, "forward, from the input") == ["0", "1", "2", "…", "17", "18", "19"]


def test_culprit_rows_are_marked_in_their_own_pass_only():
    report = text(layerdiff.compare_models(deep(broken_at=10), deep(), input_shape=(4, 3)))
    forward = report.split("forward, from the input", 1)[1].split("backward, from the output")[0]
    backward = report.split("backward, from the output", 1)[1]
    assert re.search(r"^10 .* ok\s*$", forward, re.M)
    assert re.search(r"^10 .* culprit\s*$", backward, re.M)
    assert re.search(r"^ 9 .* inherited\s*$", backward, re.M)


def test_report_fits_80_columns_and_puts_the_verdict_first(cli):
    code, out, _ = cli("run", PADDING_BUG, FIXTURES / "cnn_torch.py")
    assert code == 1
    lines = out.splitlines()
    assert max(len(l.rstrip()) for l in lines) <= 80
    assert lines[2] == "result: they diverge, 2 culprits"
    assert lines[3].startswith("culprit  conv1 (b: 0) [forward] output: max rel")
    assert lines[4].startswith("  hint   bug_conv_padding_off_by_one.py's conv1 output is cnn_torch.py's moved")


def test_every_number_the_terminal_prints_is_in_the_json(cli):
    _, out, _ = cli("run", SIGMOID_BUG, MLP, "-o", "a", "--all")
    _, js, _ = cli("run", SIGMOID_BUG, MLP, "-o", "b", "--json")
    report = json.loads(js)

    def numbers(value):
        if isinstance(value, float):
            yield f"{value:.1e}"
        elif isinstance(value, dict):
            for v in value.values():
                yield from numbers(v)
        elif isinstance(value, list):
            for v in value:
                yield from numbers(v)

    assert set(NUMBER.findall(out)) <= set(numbers(report))
    sig2 = next(l for l in report["layers"] if l["layer_a"] == "sig2")
    assert sig2["verdicts"] == {"forward": "ok", "backward": "culprit"}
    assert re.search(r"^\s*3  sig2 .* culprit\s*$", out.split("backward, from the output")[1], re.M)
    for c in report["culprits"]:
        assert c["hint"] is None or " ".join(c["hint"].split()[:4]) in " ".join(out.split())
    assert {"a", "b", "a_shape", "b_shape", "transpose", "by", "note"} == set(report["weights"]["links"][0])
    assert all(note in " ".join(out.split()) for note in report["feed"])


def run_in_terminal(args, env=None, stdout_tty=True, stderr_tty=False, timeout=120):
    """Run the CLI as a subprocess with stdout and/or stderr on a pseudo-terminal; returns (stdout, stderr)."""
    master, slave = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}
    environment.update(TERM="xterm-256color", COLUMNS="80", **(env or {}))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from layerdiff.cli import main; main()", *map(str, args)],
        stdout=slave if stdout_tty else subprocess.PIPE,
        stderr=slave if stderr_tty else subprocess.PIPE,
        env=environment,
    )
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    piped_out, piped_err = proc.communicate(timeout=timeout)
    os.close(master)
    terminal = seen.decode(errors="replace")
    return (terminal if stdout_tty else piped_out.decode()), (terminal if stderr_tty else piped_err.decode())


def colors(out: str) -> set[str]:
    """The colour codes among the terminal's SGR sequences (bold and dim are not colours; NO_COLOR keeps them)."""
    codes = {c for params in re.findall(r"\x1b\[([0-9;]*)m", out) for c in params.split(";")}
    return {c for c in codes if c.isdigit() and (30 <= int(c) <= 38 or 40 <= int(c) <= 48 or 90 <= int(c) <= 107)}


def test_color_on_a_terminal_none_when_piped_or_with_no_color(tmp_path, cli):
    args = ["run", SIGMOID_BUG, MLP, "-o"]
    out, _ = run_in_terminal([*args, tmp_path / "1"])
    assert colors(out) and "culprit" in out
    out, _ = run_in_terminal([*args, tmp_path / "2"], env={"NO_COLOR": "1"})
    assert not colors(out) and "culprit" in out
    _, piped, _ = cli(*args, tmp_path / "3")
    assert "\x1b[" not in piped and "culprit" in piped


def test_progress_bar_on_a_terminal_only(tmp_path):
    _, err = run_in_terminal(["run", SIGMOID_BUG, MLP, "-o", tmp_path / "1"], stdout_tty=False, stderr_tty=True)
    assert "compare" in err and "capture mlp_numpy.py" in err
    _, err = run_in_terminal(["run", SIGMOID_BUG, MLP, "-o", tmp_path / "2"], stdout_tty=False, stderr_tty=False)
    assert err == ""


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_html_report_is_one_self_contained_file_with_the_plots_and_the_culprit(cli, tmp_path):
    code, _, err = cli("run", PADDING_BUG, FIXTURES / "cnn_torch.py", "--html", "report.html")
    assert code == 1 and "html: report.html" in err
    page = parse(tmp_path / "report.html")
    words = " ".join(" ".join(page.text).split())
    assert "they diverge, 2 culprits" in words
    assert "culprit conv1 (b: 0) [forward] output" in words and "moved by (1, 1) pixels" in words
    assert "Error against depth" in words and "Parameter mapping" in words and "fc.weights" in words
    assert len(page.images) == 3  # the depth plot, and one picture per culprit
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1]).startswith(PNG)
    assert not {"script", "link", "iframe", "object"} & set(page.tags)
    assert "http://" not in (tmp_path / "report.html").read_text() and "https://" not in (tmp_path / "report.html").read_text()


def test_html_of_a_match_and_of_two_dumps(cli, tmp_path):
    assert cli("run", MLP, MLP, "-o", "same", "--html", "same.html")[0] == 0
    assert "the same within tolerance" in " ".join(parse(tmp_path / "same.html").text)
    cli("dump", MLP, "-o", "a.h5")
    cli("dump", SIGMOID_BUG, "-o", "b.h5", "--weights-from", "a.h5")
    assert cli("compare", "a.h5", "b.h5", "--html", "dumps.html")[0] == 1
    words = " ".join(" ".join(parse(tmp_path / "dumps.html").text).split())
    assert "two dumps: no replay, so no culprits" in words


@pytest.mark.parametrize("name,signature", [("depth.png", PNG), ("depth.svg", b"<?xml"), ("depth.pdf", b"%PDF")])
def test_plot_alone(cli, tmp_path, name, signature):
    code, _, err = cli("run", SIGMOID_BUG, MLP, "--plot", name)
    assert code == 1 and f"plot: {name}" in err
    assert (tmp_path / name).read_bytes().startswith(signature)
    assert oct((tmp_path / name).stat().st_mode & 0o777) != oct(0o600)  # not left private by the temporary file


def test_existing_report_is_refused_before_anything_runs(cli, tmp_path):
    (tmp_path / "report.html").write_text("mine")
    code, _, err = cli("run", SIGMOID_BUG, MLP, "--html", "report.html")
    assert code == 2 and "report.html exists. Pass --force to replace it" in one_error_line(err)
    assert (tmp_path / "report.html").read_text() == "mine" and not (tmp_path / "layerdiff-out").exists()
    assert cli("run", SIGMOID_BUG, MLP, "--html", "report.html", "--force")[0] == 1
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")


def test_unwritable_report_path(cli, tmp_path):
    (tmp_path / "file").write_text("")
    code, _, err = cli("run", SIGMOID_BUG, MLP, "--html", "file/report.html")
    assert code == 2 and "Cannot write file/report.html" in one_error_line(err)
    code, _, err = cli("run", SIGMOID_BUG, MLP, "--plot", "depth.bmpx")
    assert code == 2 and "cannot tell the plot's format from '.bmpx'. Use .png, .svg or .pdf." in one_error_line(err)
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "layerdiff-out").exists()  # refused before running


def test_missing_matplotlib_is_one_line_naming_the_extra(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, _, err = cli("run", SIGMOID_BUG, MLP, "--html", "report.html")
    assert code == 2
    assert "Install it with: pip install 'layerdiff[report]'" in one_error_line(err)
    assert not (tmp_path / "layerdiff-out").exists() and not (tmp_path / "report.html").exists()


@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
def test_every_culprit_gets_its_picture(tmp_path, monkeypatch):
    from layerdiff import plots

    monkeypatch.setenv("LAYERDIFF_GPT_SIZE", "tiny")
    result = layerdiff.run(FIXTURES / "bug_gpt_attention_scale_missing.py", FIXTURES / "gpt_torch.py", out=tmp_path)
    culprits = result.comparison.culprits
    assert len(culprits) >= 2  # one of them blamed on the consumer of a tapped value
    assert all(plots.culprit(c, "a", "b") is not None for c in culprits)


def test_error_map_shows_where_a_shift_differs():
    from layerdiff.diagnose import error_map

    a = np.zeros((2, 3, 6, 6))
    b = a.copy()
    b[1, 2, 0, :] = 1.0  # one border row of one channel of one sample
    maps, labels = error_map(a, b)
    assert maps.shape == (3, 6, 6) and labels == ["channel 0", "channel 1", "channel 2"]
    assert np.count_nonzero(maps[2][0]) == 6 and not maps[:2].any() and not maps[2][1:].any()
