"""The isolation suite: every bug variant against its reference, every clean pair in both precisions.

    python benchmarks/isolation.py

Prints one row per variant (declared pass and layer, culprits found, hint found) and the totals the isolation
issue asks for: culprits at the right layer and pass, culprits on clean pairs, expected hints stated.
"""

from __future__ import annotations

import os
import runpy
import sys
import tempfile
import warnings
from pathlib import Path

import layerdiff

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CLEAN = ("mlp", "cnn", "norm", "deep", "gpt", "mlp_jax", "cnn_jax", "mlp_nnx", "cnn_linen")


def declared(path: Path) -> dict:
    sys.path.insert(0, str(path.parent))
    try:
        return runpy.run_path(str(path))["EXPECTED"]
    finally:
        sys.path.remove(str(path.parent))


def culprits_match(want: dict, report: dict) -> bool:
    found = [(c["layer_a"], c["pass"]) for c in report["culprits"]]
    if "culprits" in want:
        return found == [(c["layer"], c["pass"]) for c in want["culprits"]]
    passes = ("forward",) if want["pass"] == "forward" else ("backward", "param_grad")
    return bool(found) and {layer for layer, _ in found} == {want["layer"]} and found[0][1] in passes


def main() -> None:
    warnings.simplefilter("ignore")
    out = Path(tempfile.mkdtemp())
    rows, right, hinted, hints = [], 0, 0, 0
    variants = sorted(FIXTURES.glob("bug_*.py"))
    for path in variants:
        want = declared(path)
        report = layerdiff.run(path, FIXTURES / want["reference"], out=out / path.stem).json()
        ok = culprits_match(want, report)
        right += ok
        text = " ".join(c["hint"] or "" for c in report["culprits"]).lower()
        if want.get("hint"):
            hints += 1
            hinted += want["hint"].lower() in text
        found = ", ".join(f"{c['layer_a']}:{c['pass']}" for c in report["culprits"])
        rows.append((path.stem, f"{want['pass']}:{want['layer']}", found, "yes" if ok else "NO", want.get("hint") or "-"))
    clean_culprits, clean_runs = 0, 0
    for net in CLEAN:
        a, b = (f"{net}.py", f"{net.split('_')[0]}_torch.py") if "_" in net else (f"{net}_numpy.py", f"{net}_torch.py")
        for dtype in ("float64", "native"):
            report = layerdiff.run(FIXTURES / a, FIXTURES / b, out=out / f"{net}-{dtype}", dtype=dtype).json()
            clean_runs += 1
            clean_culprits += len(report["culprits"])
    width = max(len(r[0]) for r in rows)
    print(f"{'variant':{width}}  {'declared':28}  {'culprits found':40}  right  hint")
    for name, want, found, ok, hint in rows:
        print(f"{name:{width}}  {want:28}  {found[:40]:40}  {ok:5}  {hint}")
    print()
    print(f"culprits at the declared layer and pass: {right}/{len(variants)} variants ({100 * right / len(variants):.0f}%)")
    print(f"culprits on clean pairs: {clean_culprits} in {clean_runs} runs ({len(CLEAN)} pairs, float64 and native)")
    print(f"expected hints stated: {hinted}/{hints}")


if __name__ == "__main__":
    os.environ.setdefault("LAYERDIFF_GPT_SIZE", "tiny")
    main()
