"""layerdiff: find the layer where two implementations of the same network part ways."""

__version__ = "0.1.0"

from layerdiff.api import Result, compare_models, compare_paths, compare_to_dump, dump, dump_model, gradcheck, inspect, overfit, run
from layerdiff.errors import (
    AdapterError, AlignmentError, DumpError, LayerdiffError, ModelFileError, OptionError, ReportError,
)
from layerdiff.health_report import text
from layerdiff.record import record
from layerdiff.tap import tap, tap_grad

__all__ = [
    "AdapterError",
    "AlignmentError",
    "DumpError",
    "LayerdiffError",
    "ModelFileError",
    "OptionError",
    "ReportError",
    "Result",
    "compare_models",
    "compare_paths",
    "compare_to_dump",
    "dump",
    "dump_model",
    "gradcheck",
    "inspect",
    "overfit",
    "record",
    "run",
    "tap",
    "tap_grad",
    "text",
]
