"""layerdiff's pytest plugin: the ``layerdiff_golden`` fixture and the ``--layerdiff-update-golden`` option.

pytest loads it in every session through the ``pytest11`` entry point, so it imports nothing of layerdiff (nor
NumPy) until a test asks for the fixture: a test suite that does not use layerdiff pays for an option and no more.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

OPTION = "--layerdiff-update-golden"
_rewritten = pytest.StashKey[list[Path]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("layerdiff").addoption(
        OPTION,
        action="store_true",
        default=False,
        help="Write the golden dumps that layerdiff_golden compares against, from the models as they are now.",
    )


@pytest.fixture
def layerdiff_golden(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``layerdiff.testing.assert_golden`` with a relative path taken from the rootdir; with
    ``--layerdiff-update-golden`` it writes the dump instead of checking against it.

    >>> def test_swish(layerdiff_golden):               # doctest: +SKIP
    ...     layerdiff_golden([Swish()], "tests/golden/swish.h5", input_shape=(8, 16))
    """
    from layerdiff.testing import assert_golden

    config = request.config
    update = bool(config.getoption(OPTION))

    def check(model: Any, golden: str | os.PathLike[str], **options: Any) -> Any:
        __tracebackhide__ = True
        path = config.rootpath / golden
        result = assert_golden(model, path, update=update, **options)
        if update:
            config.stash.setdefault(_rewritten, []).append(path)
        return result

    return check


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    written = config.stash.get(_rewritten, [])
    if written:
        terminalreporter.section("layerdiff golden dumps written")
        for path in written:
            terminalreporter.write_line(str(path))
