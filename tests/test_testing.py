"""layerdiff in a test suite: assert_same, golden dumps, and the pytest plugin that refreshes them."""

import subprocess
import sys
import textwrap

import pytest
import torch

from layerdiff.testing import assert_same
from test_custom_layer import Swish


class SwishWithSignError(Swish):  # the README's layer, broken: the product rule's second term subtracted
    def backward(self, dout):
        return dout * self.s * (1 - self.x * (1 - self.s))


class SwishWithDoubledGradient(Swish):
    def backward(self, dout):
        return 2 * super().backward(dout)


def failure(layer) -> str:
    with pytest.raises(AssertionError) as raised:
        assert_same([layer], torch.nn.SiLU(), input_shape=(8, 16))
    return str(raised.value)


def test_a_broken_custom_layer_fails_naming_the_culprit_with_the_table():
    message = failure(SwishWithSignError())
    assert message.startswith("layerdiff: the implementations diverge; culprit: 0\n")
    assert "culprit  0 (b: model) [backward] grad_input: max rel" in message
    assert "forward  no divergence" in message
    assert "backward, from the output" in message and "culprit" in message.split("backward, from the output")[1]


def test_the_hint_is_in_the_failure_message():
    message = " ".join(failure(SwishWithDoubledGradient()).split())
    assert "hint a's 0 input gradient is 2 × b's." in message


def test_assert_same_returns_the_result_when_they_agree():
    assert assert_same([Swish()], torch.nn.SiLU(), input_shape=(8, 16)).match


GOLDEN_TEST = '''
import numpy as np

class Dense:
    def __init__(self):
        self.W, self.b = np.random.randn(5, 3), np.zeros(3)   # unseeded: the golden dump's weights are used
    def forward(self, x):
        self.x = x
        return x @ self.W + self.b
    def backward(self, dout):
        self.dW, self.db = self.x.T @ dout, dout.sum(0)
        return dout @ self.W.T{bug}

def test_dense_matches_golden(layerdiff_golden):
    layerdiff_golden([Dense()], "tests/golden/dense.h5", input_shape=(4, 5))
'''


def test_golden_dump_workflow(pytester):
    pytester.makeini("[pytest]\n")  # the rootdir: golden paths are relative to it
    pytester.makepyfile(test_dense=GOLDEN_TEST.format(bug=""))
    golden = pytester.path / "tests" / "golden" / "dense.h5"

    missing = pytester.runpytest()
    missing.assert_outcomes(failed=1)
    missing.stdout.fnmatch_lines(["*Golden dump *tests/golden/dense.h5 does not exist. Write it with `pytest --layerdiff-update-golden`*"])

    written = pytester.runpytest("--layerdiff-update-golden")
    written.assert_outcomes(passed=1)
    written.stdout.fnmatch_lines(["*layerdiff golden dumps written*", f"{golden}"])
    assert golden.is_file()

    pytester.runpytest().assert_outcomes(passed=1)

    pytester.makepyfile(test_dense=GOLDEN_TEST.format(bug=" * 0.5"))
    broken = pytester.runpytest()
    broken.assert_outcomes(failed=1)
    broken.stdout.fnmatch_lines(["*layerdiff: the implementations diverge; culprit: 0*", "*hint*dense.h5's 0 input gradient is 2 × model's.*", "*backward, from the output*"])


def test_plugin_option_is_registered():
    done = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True)
    assert "--layerdiff-update-golden" in done.stdout


def test_plugin_costs_nothing_until_used():
    code = textwrap.dedent(
        """
        import sys, pytest_layerdiff
        print(sorted(m for m in ("layerdiff", "numpy", "h5py", "rich", "matplotlib") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
