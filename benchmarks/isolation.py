"""The isolation suite: every bug variant against its reference, every clean pair in both precisions.

    python benchmarks/isolation.py              # the project's fixtures, then the foreign corpus
    python benchmarks/isolation.py --fixtures   # the fixtures only
    python benchmarks/isolation.py --corpus     # the corpus only (pip install -e '.[corpus]')

Prints one row per variant (declared pass and layer, culprits found, hint found) and the totals the isolation
issue asks for: culprits at the right layer and pass, culprits on clean pairs, expected hints stated. The corpus
(benchmarks/corpus/) is networks nobody here wrote, from PyPI packages, each against a PyTorch reference; its table
adds the lines of glue each model file needs today (lines marked ``# glue``) and the packages' own defects
(``DEFECTS`` in a clean pair's file), which count as found when named and are no false alarm.
"""

from __future__ import annotations

import os
import runpy
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import layerdiff

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CORPUS = Path(__file__).resolve().parent / "corpus"
# (network, side A, side B, the PyPI package side A uses): the corpus's clean pairs.
CORPUS_PAIRS = (
    ("npml_mlp", "npml_mlp.py", "npml_mlp_torch.py", "numpy-ml"),
    ("npml_cnn", "npml_cnn.py", "npml_cnn_torch.py", "numpy-ml"),
    ("npml_rnn", "npml_rnn.py", "npml_rnn_torch.py", "numpy-ml"),
    ("tinynn_mlp", "tinynn_mlp.py", "tinynn_mlp_torch.py", "tinynn"),
    ("tinynn_cnn", "tinynn_cnn.py", "tinynn_cnn_torch.py", "tinynn"),
    ("tinynn_rnn", "tinynn_rnn.py", "tinynn_rnn_torch.py", "tinynn"),
    ("tinynn_elu", "tinynn_elu.py", "tinynn_elu_torch.py", "tinynn"),
    ("mytorch_mlp", "mytorch_mlp.py", "mytorch_mlp_torch.py", "custom-cnn"),
    ("mytorch_cnn", "mytorch_cnn.py", "mytorch_cnn_torch.py", "custom-cnn"),
    ("hf_gpt2", "hf_gpt2.py", "hf_gpt2_ref.py", "transformers"),
    ("hf_bert", "hf_bert.py", "hf_bert_ref.py", "transformers"),
)
CLEAN = ("mlp", "cnn", "norm", "deep", "gpt", "fused", "attn", "mlp_jax", "cnn_jax", "mlp_nnx", "cnn_linen")


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


def fixtures() -> None:
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


def glue_lines(*paths: Path) -> int:
    return sum(line.rstrip().endswith("# glue") or "# glue:" in line for p in paths for line in p.read_text().splitlines())


def module_names(path: Path, name: str) -> object:
    """A name a model file defines, without running layerdiff on it."""
    sys.path.insert(0, str(path.parent))
    try:
        return runpy.run_path(str(path)).get(name)
    finally:
        sys.path.remove(str(path.parent))


def corpus_run(a: Path, b: Path, out: Path, **options: object) -> tuple[list[tuple[str, str, str]] | None, str]:
    """Culprits (layer, pass, hint) of one run, or None and what stopped it: exit 2 (a LayerdiffError) or a crash."""
    before = set(sys.modules)
    try:
        report = layerdiff.run(a, b, out=out, **options).json()
    except layerdiff.LayerdiffError as exc:
        return None, f"exit 2: {str(exc).splitlines()[0][:150]}"
    except Exception as exc:  # a bug in layerdiff (or in the foreign package) keeps its traceback
        traceback.print_exc(limit=-3)
        return None, f"crash: {type(exc).__name__}: {str(exc).splitlines()[0][:150] if str(exc) else ''}"
    finally:
        # The corpus's model files import each other (a variant its clean pair): each run gets them anew.
        for name in set(sys.modules) - before:
            if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(CORPUS)):
                del sys.modules[name]
    if report["culprits"] is None:
        return None, "no replay"
    return [(c["layer_a"], "param_grad" if c["pass"] == "param_grad" else c["pass"], c["hint"] or "") for c in report["culprits"]], ""


def corpus() -> None:
    out = Path(tempfile.mkdtemp())
    nets = {net: (CORPUS / a, CORPUS / b, pkg) for net, a, b, pkg in CORPUS_PAIRS}
    defects = {net: [(d["layer"], d["pass"]) for d in (module_names(a, "DEFECTS") or [])] for net, (a, _, _) in nets.items()}
    rows = []
    clean_alarms, clean_runs, defects_found, defects_all = 0, 0, 0, 0
    for net, (a, b, pkg) in nets.items():
        glue = glue_lines(a, b)
        for dtype in ("float64", "native"):
            found, stop = corpus_run(a, b, out / f"{net}-{dtype}", dtype=dtype)
            clean_runs += 1
            known = defects[net]
            alarms = [c for c in found or [] if (c[0], c[1]) not in known]
            clean_alarms += len(alarms)
            if dtype == "float64":
                defects_all += len(known)
                defects_found += len({(c[0], c[1]) for c in found or []} & set(known))
            text = stop or (", ".join(f"{l}:{p}" for l, p, _ in found) or "none")
            want = ", ".join(f"{l}:{p}" for l, p in known) or "none"
            verdict = "crash" if stop.startswith("crash") else ("exit 2" if stop else ("yes" if not alarms else f"NO ({len(alarms)} false)"))
            rows.append((net, f"clean ({dtype})", f"defects: {want}", text, verdict, "-", "", glue))
    right, hints, hinted, variants = 0, 0, 0, sorted(CORPUS.glob("bug_*.py"))
    by_ref = {b.name: net for net, (_, b, _) in nets.items()}
    for path in variants:
        want = declared(path)
        net = by_ref[want["reference"]]
        a, b, _ = nets[net]
        glue = glue_lines(a, b)  # a variant repeats (or imports) its clean pair's glue
        declared_set = [(c["layer"], c["pass"]) for c in want["culprits"]]
        found, stop = corpus_run(path, b, out / path.stem)
        got = {(c[0], c[1]) for c in found or []}
        ok = found is not None and set(declared_set) <= got and got <= set(declared_set) | set(defects[net])
        right += ok
        hint_ok = ""
        if want.get("hint"):
            hints += 1
            said = " ".join(h for l, p, h in found or [] if (l, p) in declared_set).lower()
            hint_ok = "yes" if want["hint"].lower() in said else "NO"
            hinted += hint_ok == "yes"
        text = stop or (", ".join(f"{l}:{p}" for l, p, _ in found) or "none")
        verdict = "crash" if stop.startswith("crash") else ("exit 2" if stop else ("yes" if ok else "NO"))
        rows.append((net, path.stem.removeprefix(f"bug_{net}_"), ", ".join(f"{l}:{p}" for l, p in declared_set), text, verdict,
                     want.get("hint") or "-", hint_ok, glue))
    head = ("network", "variant", "declared culprits", "culprits found", "right", "hint wanted", "stated", "glue")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    widths[3] = min(widths[3], 70)
    for r in [head, *rows]:
        print("  ".join(f"{str(v)[:widths[i]]:{widths[i]}}" for i, v in enumerate(r)))
    print()
    n_numpy = sum(1 for _, _, _, pkg in CORPUS_PAIRS if pkg != "transformers")
    print(f"corpus: {len(nets)} networks ({n_numpy} NumPy from {len({p for *_, p in CORPUS_PAIRS if p != 'transformers'})} PyPI packages, "
          f"{len(nets) - n_numpy} PyTorch), {len(variants)} bug variants")
    print(f"bugs named at the declared layer and pass: {right}/{len(variants)} variants")
    print(f"false alarms on clean pairs (culprits that are no declared package defect): {clean_alarms} in {clean_runs} runs (float64 and native)")
    print(f"package defects named on clean pairs: {defects_found}/{defects_all} (float64)")
    print(f"expected hints stated: {hinted}/{hints}")
    print("glue lines per network (side A + side B): " + ", ".join(f"{net} {glue_lines(a, b)}" for net, (a, b, _) in nets.items()))


def main() -> None:
    warnings.simplefilter("ignore")
    which = sys.argv[1:]
    if "--corpus" not in which:
        fixtures()
    if "--fixtures" not in which:
        if "--corpus" not in which:
            print()
        corpus()


if __name__ == "__main__":
    os.environ.setdefault("LAYERDIFF_GPT_SIZE", "tiny")
    main()
