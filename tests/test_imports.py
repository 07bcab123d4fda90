"""The core imports no framework; the public API is what __init__ re-exports."""

import doctest
import importlib
import subprocess
import sys

import pytest

import layerdiff
from pathlib import Path


def test_import_layerdiff_imports_no_framework_nor_matplotlib():
    modules = "('torch', 'jax', 'flax', 'matplotlib')"
    code = f"import sys, layerdiff, layerdiff.cli, layerdiff.testing; print(sorted(m for m in {modules} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _core_modules() -> list[str]:
    """Every module under layerdiff/ by its name there ("api", "store.walk"); a subpackage's __init__ as the package."""
    root = Path(layerdiff.__file__).parent
    names = []
    for p in root.rglob("*.py"):
        parts = p.relative_to(root).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if parts and parts[0] != "adapters":  # installed as layerdiff.adapters, under root unless installed editable
            names.append(".".join(parts))
    return sorted(names)


CORE = _core_modules()


@pytest.mark.parametrize("module", CORE)
def test_docstring_examples_run(module):
    failures, _ = doctest.testmod(importlib.import_module(f"layerdiff.{module}"))
    assert failures == 0


def test_the_public_modules_show_their_use_in_examples():
    tried = {m: doctest.testmod(importlib.import_module(f"layerdiff.{m}"))[1] for m in CORE}
    without = [m for m in ("api", "adapter", "capture", "layout", "stats", "records", "metrics", "testing", "tap", "errors") if not tried[m]]
    assert not without


def test_adapters_are_registered_as_entry_points():
    from layerdiff.adapter import available

    assert {"numpy", "torch", "jax"} <= set(available())
