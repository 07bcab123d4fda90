"""Each pattern is named when it explains the difference, and only then."""

import numpy as np
import pytest

from layerdiff.diagnose import Sides, describe

rng = np.random.default_rng(0)
REF = rng.standard_normal((4, 3, 8, 8))
SIDES = Sides("A", "B", batch=4)


def relu_grad(x):
    return np.where(rng.standard_normal(x.shape) > 0, x, 0.0)


CASES = {
    "batch size": (REF * 4, REF),
    "1/2": (REF / 2, REF),
    "sign flipped": (-REF, REF),
    "1.01": (REF * 1.01, REF),
    "transposed": (np.swapaxes(REF, -1, -2), REF),
    "shifted by a constant": (REF + 0.5, REF),
    "per channel": (REF + np.arange(3.0)[None, :, None, None], REF),
    "moved by (1, 1) pixels": (np.pad(REF, ((0, 0), (0, 0), (1, 0), (1, 0)))[..., :8, :8], REF),
    "all zeros": (np.zeros_like(REF), REF),
    "nan/inf": (np.where(REF > 2, np.nan, REF), REF),
}


@pytest.mark.parametrize("mark", CASES)
def test_pattern_is_named_on_its_case_and_no_other(mark):
    a, b = CASES[mark]
    assert mark in describe(a, b, SIDES, 1e-12).lower()
    for other, (x, y) in CASES.items():
        if other != mark:
            assert mark not in (describe(x, y, SIDES, 1e-12) or "").lower(), other


def test_zero_pattern_of_a_relu_derivative():
    b = relu_grad(REF)
    a = REF.copy()  # passes the gradient where the reference blocks it
    assert "only where B is exactly zero" in describe(a, b, SIDES, 1e-12)


def test_causal_mask_patterns():
    scores = rng.standard_normal((2, 4, 6, 6))
    leaky = scores + np.triu(np.ones((6, 6)), 1)
    assert "above the diagonal" in describe(leaky, scores, SIDES, 1e-12)
    shifted = scores + np.eye(6)
    assert "on the diagonal" in describe(shifted, scores, SIDES, 1e-12)


def test_softmax_over_the_wrong_axis():
    logits = rng.standard_normal((8, 10))
    right = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    wrong = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)
    assert "softmax over axis 0 in A but over axis 1 in B" in describe(wrong, right, SIDES, 1e-12)


def test_epsilon_in_a_normalization():
    x = rng.standard_normal((8, 32)) * rng.uniform(0.01, 1, (8, 1))

    def norm(eps):
        return (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps)

    assert "epsilon" in describe(norm(1e-3), norm(1e-5), SIDES, 1e-12)


def test_border_difference_from_padding():
    a = REF.copy()
    a[..., 0, :] += 1.0
    a[..., -1, 3] -= 2.0
    assert "border" in describe(a, REF, SIDES, 1e-12)


def test_noise_gets_no_hint():
    assert describe(REF + rng.standard_normal(REF.shape), REF, SIDES, 1e-12) is None


def test_a_single_number_gets_no_hint():
    assert describe(np.array(2.0), np.array(1.0), SIDES, 1e-12) is None
