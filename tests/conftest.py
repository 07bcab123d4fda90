import json
import os
import warnings
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
CLEAN_PAIRS = [(f"{net}_numpy.py", f"{net}_torch.py") for net in ("mlp", "cnn", "norm", "deep", "gpt", "resnet", "fused", "attn")]


def bug_variants() -> list[Path]:
    return sorted(FIXTURES.glob("bug_*.py"))


def expected(path: Path) -> dict:
    """A fixture's declared ground truth, read as layerdiff reads the file (its own folder's helper modules first)."""
    from layerdiff.modelfile import _execute

    return _execute(path)["EXPECTED"]


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run the CLI in-process from a fresh folder; returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str):
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.fixture(scope="session")
def shared_result(tmp_path_factory):
    """``layerdiff.run(a, b, dtype=dtype)``, run once per session for each pair and precision: the fixture pairs and
    the bug variants are read by several test files (test_fixtures, test_isolation, test_transformer, test_hints),
    each asserting its own part of the same result. Returns the ``Result``."""
    import layerdiff

    folder = tmp_path_factory.mktemp("shared-runs")
    done: dict = {}

    def invoke(a, b, dtype: str = "float64"):
        sizes = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("LAYERDIFF_") and k.endswith("_SIZE")))
        key = (str(a), str(b), dtype, sizes)
        if key not in done:
            with warnings.catch_warnings():  # a variant's own warnings (log of zero) are its bug, not the test's
                warnings.simplefilter("ignore")
                done[key] = layerdiff.run(a, b, out=folder / f"run-{len(done)}", dtype=dtype)
        return done[key]

    return invoke


@pytest.fixture(scope="session")
def shared_run(shared_result):
    """``layerdiff run --json A B --dtype D`` as the command reports it, from the session's shared result: (exit
    code, report)."""

    def invoke(a, b, *options: str):
        assert len(options) == 2 and options[0] == "--dtype", options
        result = shared_result(a, b, options[1])
        return (0 if result.match else 1), json.loads(json.dumps(result.json(), default=str))

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
