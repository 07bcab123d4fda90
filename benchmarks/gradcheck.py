"""gradcheck's cost over the fixture suite and its sensitivity to an error in one coordinate.

    python benchmarks/gradcheck.py              # every fixture, then the sensitivity table
    python benchmarks/gradcheck.py --no-torch   # NumPy fixtures only

Cost: each fixture checked with the default sampling, in this process, one after the other: coordinates checked,
loss evaluations (two per coordinate when the first step agrees, up to ten when it does not), wall seconds, and
seconds per coordinate. The load average is printed with it: on a shared machine PyTorch's timings move with it.

Sensitivity: a 100 x 100 dense layer (10,000 weights) whose backward multiplies one coordinate of its weight
gradient by (1 + error), checked at that coordinate (``at=``), for coordinates of large, median and small gradient.
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
import time
from pathlib import Path

import layerdiff

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SKIP = {"dropout_numpy.py", "gpt_config.py"}  # random on purpose; not a model


def wide(bump: tuple[tuple[int, int], float] | None = None) -> list[object]:
    """The 10,000-weight network of ``fixtures/wide_numpy.py``, with ``bump = (index, error)`` in its gradient."""
    build = runpy.run_path(str(FIXTURES / "wide_numpy.py"))["wide"]
    return build() if bump is None else build(bump[1], bump[0])  # type: ignore[no-any-return]


def cost(torch: bool) -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; LAYERDIFF_GPT_SIZE={os.environ.get('LAYERDIFF_GPT_SIZE', 'tiny')}")
    print(f"{'fixture':40} {'coords':>7} {'evals':>6} {'seconds':>8} {'ms/coord':>9}  result")
    totals = [0, 0, 0.0]
    for path in sorted(FIXTURES.glob("*.py")):
        if path.name in SKIP or (not torch and "torch" in path.name):
            continue
        try:
            result = layerdiff.gradcheck(path)
        except layerdiff.LayerdiffError as exc:
            print(f"{path.name:40} {'':7} {'':6} {'':8} {'':9}  refused: {str(exc).split(';')[0]}")
            continue
        totals[0] += result.points
        totals[1] += result.evaluations
        totals[2] += result.seconds
        verdict = "pass" if result.passed else f"wrong: {', '.join(result.culprits)}"
        print(f"{path.name:40} {result.points:7d} {result.evaluations:6d} {result.seconds:8.2f} {1e3 * result.seconds / result.points:9.2f}  {verdict}")
    print(f"{'all':40} {totals[0]:7d} {totals[1]:6d} {totals[2]:8.2f} {1e3 * totals[2] / totals[0]:9.2f}")


def sensitivity() -> None:
    clean = layerdiff.gradcheck(wide(), input_shape=(4, 100), full=True)
    check = next(c for c in clean.layers[0].checks if c.tensor == "0.W")
    ranked = sorted((p for p in check.points if p.analytic != 0), key=lambda p: abs(p.analytic))
    worst = max(p.rel for p in check.points)
    print(f"\nclean 100 x 100 layer, all 10,000 weights: worst rel error {worst:.1e}, statuses {sorted({p.status for p in check.points})}")
    picks = {"largest": ranked[-1], "median": ranked[len(ranked) // 2], "smallest": ranked[0]}
    errors = (1e-1, 1e-2, 1e-3, 1e-4, 3e-5, 1e-5, 1e-6)
    print(f"{'coordinate':24} {'|gradient|':>10}  " + "  ".join(f"{e:>9.0e}" for e in errors))
    for label, point in picks.items():
        index = (int(point.index[0]), int(point.index[1]))
        cells = []
        for error in errors:
            result = layerdiff.gradcheck(wide((index, error)), input_shape=(4, 100), at={"0.W": [index]}, samples=0)
            found = next(p for c in result.layers[0].checks if c.tensor == "0.W" for p in c.points if p.index == index)
            cells.append(f"{found.status:>9}")
        print(f"{label + ' ' + str(index):24} {abs(point.analytic):10.1e}  " + "  ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(FIXTURES))
    start = time.perf_counter()
    cost(torch=not args.no_torch)
    sensitivity()
    print(f"\nbenchmark wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
