"""The core imports no framework; the public API is what __init__ re-exports."""

import doctest
import importlib
import subprocess
import sys

import pytest


def test_import_layerdiff_imports_no_framework_nor_matplotlib():
    modules = "('torch', 'jax', 'flax', 'matplotlib')"
    code = f"import sys, layerdiff, layerdiff.cli, layerdiff.testing; print(sorted(m for m in {modules} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "module",
    ["layerdiff.tap", "layerdiff.sync", "layerdiff.records", "layerdiff.compare", "layerdiff.api", "layerdiff.report",
     "layerdiff.progress", "layerdiff.files", "layerdiff.testing", "layerdiff.plots", "layerdiff.health",
     "layerdiff.signals", "layerdiff.declared"],
)
def test_docstring_examples_run(module):
    failures, tried = doctest.testmod(importlib.import_module(module))
    assert tried > 0 and failures == 0


def test_adapters_are_registered_as_entry_points():
    from layerdiff.adapter import available

    assert {"numpy", "torch", "jax"} <= set(available())
