"""Each pattern is named when it explains the difference, and only then."""

import math

import numpy as np
import pytest

from layerdiff.diagnose import Sides, describe, spatial_axes

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


# Evidence: each hypothesis says nothing without what it needs. (Cases of the issue that found them vacuous.)


def test_an_empty_interior_is_no_evidence_of_a_shift():
    # Moved by two "pixels", a (3, 4, 5) sequence has no interior left to compare: it used to be called a stride bug.
    a, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    assert describe(a, b, SIDES, 1e-12) is None


def test_a_shift_needs_spatial_axes_a_3d_tensor_has_them_only_when_declared():
    b = rng.standard_normal((4, 6, 16))
    a = np.pad(b, ((0, 0), (0, 0), (1, 0)))[..., :16]
    assert describe(a, b, SIDES, 1e-12) is None  # (N, C, L) or (N, T, C): nobody said
    assert "moved by 1 pixels" in describe(a, b, Sides("A", "B", batch=4, spatial=spatial_axes("N C L")), 1e-12)


def test_a_sequence_differing_at_its_last_position_is_no_padding():
    b = rng.standard_normal((2, 8, 32))
    a = b.copy()
    a[:, -1] += rng.standard_normal((2, 32))
    assert describe(a, b, SIDES, 1e-12) is None
    assert "padding" in describe(a, b, Sides("A", "B", spatial=(1, 2)), 1e-12)  # unless its axes are an image's


def test_a_border_needs_an_interior_as_large_as_itself():
    small = REF[..., :4, :4].copy()
    a = small.copy()
    a[..., 0, :] += 1.0
    assert describe(a, small, SIDES, 1e-12) is None


def test_a_relu_pattern_is_not_an_epsilon_when_the_rest_agrees_to_rounding():
    # The reference in float32: where it is not zero it agrees with A to float32 rounding, a "factor per row" of
    # 1 +- 4e-8 to a test that looked only at rows without zeros.
    grad = rng.standard_normal((4, 8, 2, 2))
    b = relu_grad(grad).astype(np.float32).astype(np.float64)
    assert "lets through" in describe(grad, b, SIDES, 1e-4)


def test_a_factor_must_explain_the_difference_not_merely_fit_a_loose_tolerance():
    x = rng.standard_normal((2, 8, 128))
    erf_gelu = 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))
    tanh_gelu = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    assert describe(erf_gelu, tanh_gelu, SIDES, 3.5e-4) is None  # it used to say "A is 1 × B"


def test_epsilon_of_a_batch_norm_per_channel_about_its_shift():
    x = rng.standard_normal((4, 8, 4, 4)) * rng.uniform(0.3, 1, (1, 8, 1, 1))
    beta = rng.standard_normal((1, 8, 1, 1))

    def norm(eps):
        return (x - x.mean((0, 2, 3), keepdims=True)) / np.sqrt(x.var((0, 2, 3), keepdims=True) + eps) + beta

    assert "epsilon" in describe(norm(1e-3), norm(1e-5), SIDES, 1e-12)


def test_a_variance_divided_by_n_minus_1_is_named():
    x = rng.standard_normal((8, 32))
    biased = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    unbiased = (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + 1e-5)
    assert "N - 1" in describe(unbiased, biased, Sides("A", "B", batch=8), 1e-12)


def test_a_factor_near_1_shows_its_digits():
    assert "1.0000123 ×" in describe(REF * 1.0000123, REF, SIDES, 1e-12)


def test_scattered_differences_are_no_causal_mask():
    scores = rng.standard_normal((2, 4, 6, 6))
    a = scores.copy()
    a[0, 0, 1, 3] += 1.0  # two entries above the diagonal, no band
    a[1, 2, 0, 5] += 1.0
    assert describe(a, scores, SIDES, 1e-12) is None
