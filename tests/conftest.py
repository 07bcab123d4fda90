import json
import os
import runpy
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from layerdiff.cli import main

pytest_plugins = ["pytester"]  # runs inner pytest sessions for the plugin's tests

# Tests marked slow (each over half a minute on two cores) run when LAYERDIFF_SLOW=1, as CI sets it (.ci/run, the
# README's test command): a developer's `pytest -q` stays within minutes, and CI still runs every test.
SLOW = os.environ.get("LAYERDIFF_SLOW") == "1"


def pytest_collection_modifyitems(config, items):
    if SLOW:
        return
    skip = pytest.mark.skip(reason="slow: LAYERDIFF_SLOW=1 runs it (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CLEAN_PAIRS = [(f"{net}_numpy.py", f"{net}_torch.py") for net in ("mlp", "cnn", "norm", "deep", "gpt", "resnet")]


def bug_variants() -> list[Path]:
    return sorted(FIXTURES.glob("bug_*.py"))


def expected(path: Path) -> dict:
    sys.path.insert(0, str(path.parent))
    try:
        return runpy.run_path(str(path))["EXPECTED"]
    finally:
        sys.path.remove(str(path.parent))


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run the CLI in-process from a fresh folder; returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str):
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory):
    """``layerdiff run --json A B [options]``, run once per session for each set of arguments: the fixture pairs and
    the bug variants are read by several test files (test_fixtures, test_isolation, test_transformer), each
    asserting its own part of the same report. Returns (exit code, report)."""
    folder = tmp_path_factory.mktemp("shared-runs")
    done: dict = {}

    def invoke(a, b, *options: str):
        sizes = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("LAYERDIFF_") and k.endswith("_SIZE")))
        key = (str(a), str(b), *options, sizes)
        if key not in done:
            out = folder / f"run-{len(done)}"
            result = CliRunner().invoke(main, ["run", "--json", str(a), str(b), "-o", str(out), *options], catch_exceptions=False)
            assert result.exit_code in (0, 1), result.stderr
            done[key] = (result.exit_code, json.loads(result.stdout))
        return done[key]

    return invoke


@pytest.fixture
def run_json(cli):
    def invoke(*args: str):
        code, out, err = cli("run", "--json", *args)
        assert code in (0, 1), err
        return code, json.loads(out)

    return invoke


def one_error_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path
