"""Each hint fires on its own bug class and on no other: over a matrix of bug classes and tensor forms, and over every
bug variant in fixtures/ (in float64 and with each side's native precision).

A hint is *right* when it holds the mark of the bug it was made for, *wrong* when it is stated anywhere else (on
another class, or where no simple pattern is the cause), *missing* when a bug whose mark is expected gets none.
Each hypothesis is also run on its own, so that one stated later in ``describe``'s order cannot hide behind another.

    python tests/test_hints.py      prints the counts
"""

from __future__ import annotations

import math
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import FIXTURES, bug_variants, expected  # noqa: E402

from layerdiff.diagnose import HYPOTHESES, Sides, describe, hints  # noqa: E402


@dataclass(frozen=True)
class Form:
    kind: str  # features, sequence, image, signal, attention
    shape: tuple[int, ...]
    spatial: tuple[int, ...] | None = None  # as the call site passes it; None: inferred from the shape


FORMS = {
    "features (8, 32)": Form("features", (8, 32)),
    "sequence (3, 4, 5)": Form("sequence", (3, 4, 5)),
    "sequence (2, 8, 32)": Form("sequence", (2, 8, 32)),
    "image (4, 6, 8, 8)": Form("image", (4, 6, 8, 8)),
    "small image (4, 8, 4, 4)": Form("image", (4, 8, 4, 4)),
    "signal (4, 6, 16), axis 2 spatial": Form("signal", (4, 6, 16), spatial=(2,)),
    # 4-D, so inferred to be an image: no spatial bug class is made on it, and a mask's triangle must still show.
    "attention (2, 4, 6, 6)": Form("attention", (2, 4, 6, 6)),
}

rng = np.random.default_rng(0)


@dataclass(frozen=True)
class Made:
    a: np.ndarray
    b: np.ndarray
    mark: str | None  # what the hint must say; None: no hint is right
    tol: float = 1e-12


def _normalize(x: np.ndarray, axes: int | tuple[int, ...], eps: float) -> np.ndarray:
    return (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


def _shifted(x: np.ndarray, axes: tuple[int, ...], by: int) -> np.ndarray:
    """x moved by ``by`` along each of ``axes``, the uncovered edge zero (what a conv padded one pixel more sees)."""
    out = np.zeros_like(x)
    src = tuple(slice(0, x.shape[i] - by) if i in axes else slice(None) for i in range(x.ndim))
    dst = tuple(slice(by, None) if i in axes else slice(None) for i in range(x.ndim))
    out[dst] = x[src]
    return out


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _erf_gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


def _tanh_gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _spatial(f: Form) -> tuple[int, ...]:
    return f.spatial if f.spatial is not None else (tuple(range(2, len(f.shape))) if len(f.shape) in (4, 5) else ())


# Each bug class makes (a, b) on a form and says what must be said there, or None where it does not apply.
def factor(k: float, mark: str) -> Callable[[Form], Made | None]:
    return lambda f: Made(k * (b := rng.standard_normal(f.shape)), b, mark)


def unbiased_variance(f: Form) -> Made | None:
    n = f.shape[0]
    if n < 3:
        return None
    return Made(np.sqrt((n - 1) / n) * (b := rng.standard_normal(f.shape)), b, "n - 1")


def transposed(f: Form) -> Made | None:
    if f.shape[-1] != f.shape[-2]:
        return None
    b = rng.standard_normal(f.shape)
    return Made(np.swapaxes(b, -1, -2), b, "transposed")


def permuted(f: Form) -> Made | None:
    b = rng.standard_normal(f.shape)
    a = b.transpose(tuple(reversed(range(b.ndim))))
    return Made(a, b, "axes permuted") if a.shape != b.shape else None


def constant_shift(f: Form) -> Made | None:
    return Made((b := rng.standard_normal(f.shape)) + 0.5, b, "shifted by a constant")


def bias_per_feature(f: Form) -> Made | None:
    b = rng.standard_normal(f.shape)
    last_is_spatial = len(f.shape) - 1 in _spatial(f)
    return Made(b + rng.standard_normal(f.shape[-1]), b, None if last_is_spatial else "a bias differs")


def bias_per_channel(f: Form) -> Made | None:
    if len(f.shape) < 3 or f.kind == "attention":
        return None  # in 2-D axis 1 is the last axis (bias_per_feature); attention's axis 1 holds heads
    b = rng.standard_normal(f.shape)
    per = rng.standard_normal(f.shape[1]).reshape([-1 if i == 1 else 1 for i in range(b.ndim)])
    # Axis 1 is a channel only beside spatial axes; of a sequence it holds positions, and a constant there is no bias.
    return Made(b + per, b, "a bias differs" if _spatial(f) else None)


def all_zeros(f: Form) -> Made | None:
    return Made(np.zeros(f.shape), rng.standard_normal(f.shape), "all zeros")


def nonfinite(f: Form) -> Made | None:
    b = rng.standard_normal(f.shape)
    return Made(np.where(b > 1.5, np.nan, b), b, "nan/inf")


def relu_lets_through(f: Form, native: bool = False) -> Made | None:
    g, x = rng.standard_normal(f.shape), rng.standard_normal(f.shape)
    b = g * (x > 0)
    if native:  # the reference in float32: it agrees with A to float32 rounding where it is not zero
        return Made(g, b.astype(np.float32).astype(np.float64), "lets through", tol=1e-4)
    return Made(g, b, "lets through")


def relu_zeroed(f: Form) -> Made | None:
    b = rng.standard_normal(f.shape)
    return Made(np.maximum(b, 0), b, "exactly zero where")


def routed(f: Form) -> Made | None:
    """A 2-wide max-pool backward sending each window's gradient to its first entry instead of to its maximum."""
    if f.shape[-1] % 2:
        return None
    x, g = rng.standard_normal(f.shape), rng.standard_normal((*f.shape[:-1], f.shape[-1] // 2))
    pairs = x.reshape(*f.shape[:-1], -1, 2)
    b = (np.eye(2)[pairs.argmax(axis=-1)] * g[..., None]).reshape(f.shape)
    a = (np.eye(2)[np.zeros_like(g, dtype=int)] * g[..., None]).reshape(f.shape)
    return Made(a, b, "routed to different positions")


def causal_leak(f: Form, diagonal: bool = False) -> Made | None:
    n = f.shape[-1]
    if f.kind != "attention" or f.shape[-2] != n:
        return None
    b = rng.standard_normal(f.shape)
    if diagonal:
        return Made(b + np.eye(n), b, "on the diagonal")
    return Made(b + np.triu(np.ones((n, n)), 1), b, "above the diagonal")


def softmax_axis(f: Form) -> Made | None:
    x = rng.standard_normal(f.shape)
    return Made(_softmax(x, -2), _softmax(x, -1), "softmax over axis")


def normalization_axis(f: Form) -> Made | None:
    if min(f.shape[-2:]) < 4 or len(f.shape) > 3:
        return None
    x = rng.standard_normal(f.shape)
    return Made(_normalize(x, -2, 0.0), _normalize(x, -1, 0.0), "normalization over axis")


def layer_norm_epsilon(f: Form) -> Made | None:
    if len(f.shape) > 3 or f.spatial:
        return None
    x = rng.standard_normal(f.shape) * rng.uniform(0.3, 1.0, (*f.shape[:-1], 1))
    gamma, beta = 1 + 0.2 * rng.standard_normal(f.shape[-1]), 0.2 * rng.standard_normal(f.shape[-1])
    a, b = (_normalize(x, -1, eps) * gamma + beta for eps in (1e-3, 1e-5))
    # (3, 4, 5): 12 rows of 5 fit with 17 numbers, too few entries to tell a normalization from chance.
    return Made(a, b, None if f.shape == (3, 4, 5) else "epsilon")


def batch_norm_epsilon(f: Form) -> Made | None:
    if f.kind == "attention":
        return None
    shape = [-1 if i == 1 else 1 for i in range(len(f.shape))]
    x = rng.standard_normal(f.shape) * rng.uniform(0.3, 1.0, f.shape[1]).reshape(shape)
    gamma = (1 + 0.2 * rng.standard_normal(f.shape[1])).reshape(shape)
    beta = (0.2 * rng.standard_normal(f.shape[1])).reshape(shape)
    over = tuple(i for i in range(len(f.shape)) if i != 1)
    a, b = (_normalize(x, over, eps) * gamma + beta for eps in (1e-3, 1e-5))
    return Made(a, b, "epsilon")


def padding(f: Form) -> Made | None:
    """The first row and one entry of the last differ (of the last two axes; of the last one of a signal): what a
    convolution padded with something else gives."""
    if f.kind == "attention" or len(f.shape) < 3:
        return None
    b = rng.standard_normal(f.shape)
    a = b.copy()
    if f.kind == "signal":
        a[..., 0] += 1.0
        a[..., -1] -= 2.0
    else:
        a[..., 0, :] += 1.0
        a[..., -1, 3] -= 2.0
    # An interior as large as the border: 8 x 8 images, not 4 x 4; never a sequence's (positions, channels).
    big = (f.kind == "image" and min(f.shape[-2:]) >= 8) or f.kind == "signal"
    return Made(a, b, "padding" if big else None)


def pixel_shift(f: Form) -> Made | None:
    if f.kind == "attention" or len(f.shape) < 3:
        return None
    n = len(f.shape)
    axes = (n - 1,) if f.kind == "signal" else (n - 2, n - 1)
    b = rng.standard_normal(f.shape)
    return Made(_shifted(b, axes, 1), b, "moved by" if _spatial(f) else None)


def noise(f: Form) -> Made | None:
    return Made((b := rng.standard_normal(f.shape)) + rng.standard_normal(f.shape), b, None)


def rounding_under_a_loose_tolerance(f: Form) -> Made | None:
    """float32-like rounding, and a tolerance that is loose (a precision's noise floor): nothing to say."""
    b = rng.standard_normal(f.shape)
    return Made(b * (1 + 3e-5 * rng.standard_normal(f.shape)), b, None, tol=1e-4)


def gelu_forms(f: Form) -> Made | None:
    """erf GELU against the tanh approximation, under a float32 noise floor: close to, but not, a factor of 1."""
    x = rng.standard_normal(f.shape)
    return Made(_erf_gelu(x), _tanh_gelu(x), None, tol=3.5e-4)


CLASSES: dict[str, Callable[[Form], Made | None]] = {
    "batch size": lambda f: Made(f.shape[0] * (b := rng.standard_normal(f.shape)), b, "batch size"),
    "1/2": factor(0.5, "1/2"),
    "1.01": factor(1.01, "1.01 ×"),
    "sign": factor(-1.0, "sign flipped"),
    "unbiased variance": unbiased_variance,
    "transposed": transposed,
    "permuted": permuted,
    "constant shift": constant_shift,
    "bias per feature": bias_per_feature,
    "bias per channel": bias_per_channel,
    "all zeros": all_zeros,
    "nan": nonfinite,
    "relu lets through": relu_lets_through,
    "relu lets through, float32 reference": lambda f: relu_lets_through(f, native=True),
    "fused relu": relu_zeroed,
    "max-pool routed": routed,
    "causal leak": causal_leak,
    "causal diagonal": lambda f: causal_leak(f, diagonal=True),
    "softmax axis": softmax_axis,
    "normalization axis": normalization_axis,
    "layer norm epsilon": layer_norm_epsilon,
    "batch norm epsilon": batch_norm_epsilon,
    "padding": padding,
    "pixel shift": pixel_shift,
    "noise": noise,
    "rounding, loose tolerance": rounding_under_a_loose_tolerance,
    "gelu erf against tanh": gelu_forms,
}


def matrix() -> list[tuple[str, str, Made]]:
    """Every (bug class, form) that applies, with its arrays."""
    rng.bit_generator.state = np.random.default_rng(0).bit_generator.state
    out = []
    for cls, make in CLASSES.items():
        for name, form in FORMS.items():
            made = make(form)
            if made is not None:
                out.append((cls, name, made))
    return out


MATRIX = matrix()


def _judge(mark: str | None, sentence: str | None) -> str | None:
    """'right', 'wrong', or None (no hint, rightly or not)."""
    if sentence is None:
        return None
    return "right" if mark is not None and mark.lower() in sentence.lower() else "wrong"


def matrix_counts() -> dict[str, int]:
    counts = {"cases": len(MATRIX), "with a mark": 0, "right": 0, "wrong": 0, "missing": 0, "wrong, each hypothesis alone": 0}
    for cls, form, made in MATRIX:
        sides = Sides("A", "B", batch=FORMS[form].shape[0], spatial=FORMS[form].spatial)
        verdict = _judge(made.mark, describe(made.a, made.b, sides, made.tol))
        counts["with a mark"] += made.mark is not None
        if verdict:
            counts[verdict] += 1
        elif made.mark is not None:
            counts["missing"] += 1
        every = hints(made.a, made.b, sides, made.tol)
        counts["wrong, each hypothesis alone"] += sum(_judge(made.mark, s) == "wrong" for s in every.values())
    return counts


@pytest.mark.parametrize("cls,form,made", MATRIX, ids=[f"{c} on {f}" for c, f, _ in MATRIX])
def test_each_hypothesis_fires_on_its_own_class_only(cls, form, made):
    sides = Sides("A", "B", batch=FORMS[form].shape[0], spatial=FORMS[form].spatial)
    every = hints(made.a, made.b, sides, made.tol)
    wrong = {name: s for name, s in every.items() if _judge(made.mark, s) == "wrong"}
    assert not wrong, f"{cls} on {form}: {wrong}"
    if made.mark is not None:
        assert made.mark.lower() in (describe(made.a, made.b, sides, made.tol) or "").lower(), every


def test_matrix_counts_no_wrong_and_no_missing_hint():
    counts = matrix_counts()
    assert counts["wrong"] == 0 and counts["wrong, each hypothesis alone"] == 0 and counts["missing"] == 0, counts
    assert counts["right"] == counts["with a mark"] >= 100


def test_every_hypothesis_is_exercised_and_declares_its_evidence():
    fired = set()
    for cls, form, made in MATRIX:
        sides = Sides("A", "B", batch=FORMS[form].shape[0], spatial=FORMS[form].spatial)
        fired |= set(hints(made.a, made.b, sides, made.tol))
    assert fired == {h.name for h in HYPOTHESES}
    assert all(len(h.evidence) > 20 for h in HYPOTHESES)


# The fixture set: every bug variant run once per precision; its culprits' hints as the report states them, and
# each hypothesis alone on the same values.

DTYPES = ("float64", "native")


@dataclass
class Found:
    variant: str
    dtype: str
    mark: str | None
    stated: list[str | None]  # each culprit's hint, as the report gives it
    alone: list[dict[str, str]]  # each culprit: every hypothesis that holds, on its own


def run_fixtures(run: Callable[..., Any]) -> list[Found]:
    """``run(variant, reference, dtype)`` gives each variant's result (the session's shared runs under pytest)."""
    found = []
    for variant in bug_variants():
        want = expected(variant)
        for dtype in DTYPES:
            result = run(variant, FIXTURES / want["reference"], dtype)
            report = result.json()
            batch = _batch(report)
            alone = []
            for c in result.comparison.culprits or []:
                if c.values is None:
                    alone.append({})
                    continue
                a, b = c.values
                alone.append(hints(a, b.reshape(a.shape) if b.size == a.size else b, Sides("A", "B", batch), c.tol))
            stated = [c.hint for c in result.comparison.culprits or []]
            found.append(Found(variant.stem, dtype, want.get("hint"), stated, alone))
    return found


def _batch(report: dict) -> int | None:
    """The batch size as the comparison names factors by it: the first input's leading axis."""
    for layer in report["layers"]:
        for t in layer["tensors"]:
            if t["key"] == "input" and t.get("shape_a"):
                return int(t["shape_a"][0])
    return None


def fixture_counts(found: list[Found], dtype: str) -> dict[str, int]:
    counts = {"variants": 0, "with a mark": 0, "right": 0, "wrong": 0, "missing": 0, "wrong, each hypothesis alone": 0}
    for f in (f for f in found if f.dtype == dtype):
        counts["variants"] += 1
        verdicts = [_judge(f.mark, h) for h in f.stated]
        counts["wrong"] += verdicts.count("wrong")
        if f.mark is not None:
            counts["with a mark"] += 1
            counts["right" if "right" in verdicts else "missing"] += 1
        counts["wrong, each hypothesis alone"] += sum(_judge(f.mark, s) == "wrong" for one in f.alone for s in one.values())
    return counts


def wrong_hints(found: list[Found], dtype: str) -> list[str]:
    out = []
    for f in (f for f in found if f.dtype == dtype):
        out += [f"{f.variant}: {h}" for h in f.stated if _judge(f.mark, h) == "wrong"]
        out += [f"{f.variant} [{n} alone]: {s}" for one in f.alone for n, s in one.items() if _judge(f.mark, s) == "wrong"]
    return out


@pytest.fixture(scope="module")
def fixture_runs(shared_result):
    return run_fixtures(shared_result)


def test_no_wrong_hint_on_the_fixture_set_in_float64_and_none_missing(fixture_runs):
    assert wrong_hints(fixture_runs, "float64") == []
    counts = fixture_counts(fixture_runs, "float64")
    assert counts["missing"] == 0 and counts["right"] == counts["with a mark"] >= 18, counts


def test_no_wrong_hint_on_the_fixture_set_in_native_precision(fixture_runs):
    # A lower precision may hide a small bug (no culprit, no hint); it must never make a hint wrong.
    assert wrong_hints(fixture_runs, "native") == []


def main() -> None:
    print("synthetic matrix (bug class x tensor form):", matrix_counts())
    import layerdiff

    out = Path(tempfile.mkdtemp())

    def run(a: Path, b: Path, dtype: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return layerdiff.run(a, b, out=out / f"{a.stem}-{dtype}", dtype=dtype)

    found = run_fixtures(run)
    for dtype in DTYPES:
        print(f"fixture set, {dtype}:", fixture_counts(found, dtype))
        for line in wrong_hints(found, dtype):
            print("  wrong:", line)
        for f in (f for f in found if f.dtype == dtype and f.mark and not any(_judge(f.mark, h) == "right" for h in f.stated)):
            print(f"  missing: {f.variant} ({f.mark!r}): {f.stated}")


if __name__ == "__main__":
    main()
