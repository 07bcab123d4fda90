"""The Llama pair at about 1B parameters (fixtures/llama_*.py at LAYERDIFF_LLAMA_SIZE=1b): what fits in this
machine's memory, and what it costs against the plain processes.

    python benchmarks/llama.py              # the 1B pair, float32: some 10 minutes, up to ~20 GB in one process
    python benchmarks/llama.py --size tiny  # the same steps on the test size: a smoke run of the script itself

1B parameters in float32 are 4.2 GB, and as much again for their gradients, per side: both sides in one process,
with layerdiff's copies, cannot fit in 23 GB. So the steps are separate processes, one at a time, each under an
address-space limit (``prlimit --as``) so that one that does not fit fails with a MemoryError instead of taking a
shared machine down:

  plain numpy / plain torch   each side alone: load the model file (build 1B weights), one forward+backward
  dump a                      layerdiff dump llama_numpy.py -o a.h5 --dtype native
  dump b                      layerdiff dump llama_torch.py -o b.h5 --dtype native --weights-from a.h5
  compare                     layerdiff compare a.h5 b.h5
  dump a block, dump b block  the same with --layers 'model.layers.15.*' (the last block), each side with its own
                              weights (the same numbers: llama_config.weights), and
  compare blk                 layerdiff compare of those two
  run                         layerdiff run --once --dtype native --stats-only: both sides in one process, and
                              native reruns each float32 side as a float64 twin: expected not to fit at 1B

Each step's wall time and peak resident memory come from ``/usr/bin/time -v``. Before each step the script waits
(up to --wait s) for --min-free-gb of MemAvailable (the machine is shared) and skips the step, saying so, if it
never comes; the limit is the smaller of --limit-gb and what is available then, less a margin. The dumps go to
the system's temp folder and are removed at the end. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which this
workplace sets for old OpenBLAS builds and which slow a current NumPy, are left out of every process it starts.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GB = 1e9
MARGIN_GB = 1.5  # left to the other users of the machine when the limit is taken from what is available
BLOCK = "model.layers.{last}.*"  # the block side A records when its whole dump does not fit

PLAIN = {
    # One forward+backward of the file's own model, as its author would run it: no layerdiff in the loop.
    "numpy": """
import runpy, sys
sys.path.insert(0, {fixtures!r})
ns = runpy.run_path({fixtures!r} + "/llama_numpy.py")
model, loss = ns["model"], ns["loss"]
value = loss.forward(model.forward(ns["inputs"]), ns["targets"])
model.backward(loss.backward())
print("loss", value, "parameters", sum(p.size for p in model.params.values()), "grads", len(model.grads))
""",
    "torch": """
import runpy, sys, torch
sys.path.insert(0, {fixtures!r})
ns = runpy.run_path({fixtures!r} + "/llama_torch.py")
model = ns["model"]
value = ns["loss"](model(torch.as_tensor(ns["inputs"])).logits, torch.as_tensor(ns["targets"]))
value.backward()
print("loss", value.item(), "parameters", sum(p.numel() for p in model.parameters()))
""",
}


def child_env(size: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["LAYERDIFF_LLAMA_SIZE"] = size
    return env


def available_gb() -> float:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 / GB for line in f if line.startswith("MemAvailable:"))


def wait_for_memory(min_gb: float, wait_s: float) -> float | None:
    """MemAvailable once it reaches min_gb, or None after wait_s seconds without."""
    deadline = time.monotonic() + wait_s
    while True:
        free = available_gb()
        if free >= min_gb:
            return free
        if time.monotonic() >= deadline:
            return None
        print(f"  waiting: {free:.1f} GB available, {min_gb:.0f} GB wanted", flush=True)
        time.sleep(15)


def timed(cmd: list[str], env: dict[str, str], limit_gb: float, cwd: Path) -> dict:
    """Run cmd under an address-space limit and /usr/bin/time -v: its exit code, wall s, peak RSS GB, output."""
    limit = ["prlimit", f"--as={int(limit_gb * GB)}"]
    proc = subprocess.run([*limit, "/usr/bin/time", "-v", *cmd], env=env, cwd=cwd, capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    seconds = None
    if wall:
        hours, minutes, secs = wall.groups()
        seconds = int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
    time_report = proc.stderr.find("\tCommand being timed")
    output = proc.stdout + (proc.stderr[:time_report] if time_report >= 0 else proc.stderr)
    return {"rc": proc.returncode, "wall": seconds, "peak": int(rss.group(1)) * 1024 / GB if rss else None,
            "output": output.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1b", choices=["1b", "tiny"])
    parser.add_argument("--limit-gb", type=float, default=20.0, help="address-space limit of each step")
    parser.add_argument("--min-free-gb", type=float, default=16.0, help="MemAvailable wanted before each step")
    parser.add_argument("--wait", type=float, default=600.0, help="seconds to wait for it before skipping a step")
    parser.add_argument("--skip-run", action="store_true", help="leave out the whole `layerdiff run`")
    parser.add_argument("--logs", help="a folder for each step's whole output")
    parser.add_argument("--skip-whole", action="store_true", help="leave out the whole dumps and their compare")
    args = parser.parse_args()

    sys.path.insert(0, str(FIXTURES))
    from llama_config import SIZES

    config = SIZES[args.size]
    env = child_env(args.size)
    python = sys.executable
    layerdiff = [python, "-m", "layerdiff.cli"] if not shutil.which("layerdiff") else [shutil.which("layerdiff")]
    folder = Path(tempfile.mkdtemp(prefix="layerdiff-llama-"))
    a, b = folder / "a.h5", folder / "b.h5"
    a_block, b_block = folder / "a_block.h5", folder / "b_block.h5"
    block = BLOCK.format(last=config.n_layer - 1)
    numpy_file, torch_file = str(FIXTURES / "llama_numpy.py"), str(FIXTURES / "llama_torch.py")
    steps = [
        ("plain numpy", [python, "-c", PLAIN["numpy"].format(fixtures=str(FIXTURES))]),
        ("plain torch", [python, "-c", PLAIN["torch"].format(fixtures=str(FIXTURES))]),
        ("dump a", [*layerdiff, "dump", numpy_file, "-o", str(a), "--dtype", "native"]),
        ("dump b", [*layerdiff, "dump", torch_file, "-o", str(b), "--dtype", "native", "--weights-from", str(a)]),
        ("compare", [*layerdiff, "compare", str(a), str(b)]),
        # Where a whole dump does not fit, what does: each side with its own weights (both build the same numbers,
        # from llama_config.weights: a --layers dump cannot give weights) recording one block, then the two compared.
        ("dump a block", [*layerdiff, "dump", numpy_file, "-o", str(a_block), "--dtype", "native", "--layers", block]),
        ("dump b block", [*layerdiff, "dump", torch_file, "-o", str(b_block), "--dtype", "native", "--layers", block]),
        ("compare blk", [*layerdiff, "compare", str(a_block), str(b_block)]),
    ]
    if args.skip_whole:
        steps = [step for step in steps if step[0] not in ("dump a", "dump b", "compare")]
    if not args.skip_run:
        steps.append(("run", [*layerdiff, "run", "--once", "--dtype", "native", "--stats-only", numpy_file, torch_file,
                              "-o", str(folder / "run")]))

    print(f"llama {args.size}: {config.n_params():,} parameters ({config.n_layer} layers, hidden {config.hidden}, "
          f"{config.n_head} heads over {config.n_kv_head} kv heads, MLP {config.intermediate}, vocab "
          f"{config.vocab_size}, tied), batch {config.batch} x {config.seq} tokens, float32")
    print(f"  {os.cpu_count()} cores; dumps in {folder}")
    results: dict[str, dict] = {}
    try:
        for name, cmd in steps:
            missing = [d for d in {"dump b": [a], "compare": [a, b], "compare blk": [a_block, b_block]}.get(name, [])
                       if not d.exists()]
            if missing:
                print(f"{name}: skipped, {' and '.join(d.name for d in missing)} not written")
                continue
            free = wait_for_memory(args.min_free_gb, args.wait)
            if free is None:
                print(f"{name}: skipped, MemAvailable stayed under {args.min_free_gb:.0f} GB for {args.wait:.0f} s")
                continue
            limit = min(args.limit_gb, free - MARGIN_GB)
            shown = "python -c <one forward+backward>" if name.startswith("plain") else " ".join(
                Path(c).name if c.startswith("/") else c for c in cmd)
            print(f"{name}: {free:.1f} GB available, limit {limit:.1f} GB: {shown}", flush=True)
            r = results[name] = timed(cmd, env, limit, folder)
            r["limit"] = limit
            if args.logs:
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                (Path(args.logs) / f"{name.replace(' ', '_')}.log").write_text(r["output"] + "\n")
            lines = r["output"].splitlines()
            for line in lines[-6:] if r["rc"] in (0, 1) else lines[-12:]:
                print(f"  | {line}")
            print(f"  rc {r['rc']}, {r['wall']:.1f} s, peak {r['peak']:.2f} GB", flush=True)
        for dump in (a, b, a_block, b_block):
            if dump.exists():
                print(f"{dump.name}: {dump.stat().st_size / GB:.2f} GB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    plain = {k: results.get(f"plain {k}") for k in ("numpy", "torch")}
    reference = {"plain numpy": "numpy", "plain torch": "torch", "dump a": "numpy", "dump b": "torch",
                 "dump a block": "numpy", "dump b block": "torch"}
    print()
    print("step          rc   wall s  peak GB  limit GB  wall ratio  peak ratio  against")
    for name, r in results.items():
        base = [plain[reference[name]]] if name in reference else [plain["numpy"], plain["torch"]]
        against = reference.get(name, "plain numpy + plain torch")
        ok = all(p is not None and p["rc"] == 0 for p in base)
        wall_ratio = r["wall"] / sum(p["wall"] for p in base) if ok else float("nan")
        peak_ratio = r["peak"] / max(p["peak"] for p in base) if ok else float("nan")
        print(f"{name:12} {r['rc']:3} {r['wall']:8.1f} {r['peak']:8.2f} {r['limit']:9.1f} {wall_ratio:11.2f} "
              f"{peak_ratio:11.2f}  {'plain ' + against if name in reference else against}")
    for label, keys in (("workflow", ("dump a", "dump b", "compare")),
                        ("workflow blk", ("dump a block", "dump b block", "compare blk"))):
        workflow = [results.get(k) for k in keys]
        if not all(r is not None and r["rc"] in (0, 1) for r in workflow):
            continue
        if not all(p and p["rc"] == 0 for p in plain.values()):
            continue
        total = sum(r["wall"] for r in workflow)
        plain_total = plain["numpy"]["wall"] + plain["torch"]["wall"]
        verdict = "match" if workflow[-1]["rc"] == 0 else "DIVERGE"
        print(f"{label:12} {'':4}{total:8.1f} {max(r['peak'] for r in workflow):8.2f} {'':9} "
              f"{total / plain_total:11.2f} {'':11}  {' + '.join(keys)}: {verdict}")


if __name__ == "__main__":
    main()
