import json
import os
import runpy
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from layerdiff.cli import main

pytest_plugins = ["pytester"]  # runs inner pytest sessions for the plugin's tests

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CLEAN_PAIRS = [(f"{net}_numpy.py", f"{net}_torch.py") for net in ("mlp", "cnn", "norm", "deep", "gpt", "resnet", "fused", "attn")]


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
