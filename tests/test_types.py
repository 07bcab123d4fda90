"""The core type-checks under mypy --strict, as pyproject.toml configures it."""

import subprocess
import sys
from pathlib import Path


def test_core_passes_mypy_strict():
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
