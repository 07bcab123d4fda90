"""GPT-2 small, NumPy against PyTorch in float64: each side's plain forward+backward against ``layerdiff run``.

    python benchmarks/gpt.py               # GPT-2 small: about 1.5 minutes and 13 GB of memory on 2 cores
    python benchmarks/gpt.py --size tiny   # smoke run

Every figure comes from this one invocation on this machine: each side's plain iteration and ``layerdiff run``
each run in a fresh process under ``/usr/bin/time -v`` (wall time, peak resident memory). Each plain process
builds its model and runs ``--steps`` forward+backward passes; layerdiff too runs each side twice (the second
run checks that the first was deterministic), so the plain process walls are its like-for-like baseline.
The dumps are then re-written with ``np.save``, array by array, as the write-speed reference.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SIDES = {"numpy": FIXTURES / "gpt_numpy.py", "torch": FIXTURES / "gpt_torch.py"}


def plain(side: str, steps: int) -> dict[str, object]:
    """Build one side from its fixture file and time forward+backward passes, without layerdiff."""
    sys.path.insert(0, str(FIXTURES))  # as `python fixtures/gpt_numpy.py` would, for its gpt_config import
    start = time.perf_counter()
    ns = runpy.run_path(str(SIDES[side]))
    if side == "torch":
        import torch

        model = ns["model"].double()
        ids, targets = torch.from_numpy(ns["inputs"]), torch.from_numpy(ns["targets"])

        def step() -> float:
            model.zero_grad(set_to_none=True)
            value = ns["loss"](model(ids), targets)
            value.backward()
            return float(value)
    else:
        model, loss, ids, targets = ns["model"], ns["loss"], ns["inputs"], ns["targets"]

        def step() -> float:
            value = loss.forward(model.forward(ids), targets)
            model.backward(loss.backward())
            return value

    built = time.perf_counter() - start
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - t)
    return {"build_s": built, "step_s": times, "loss": value}


def timed(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run ``cmd`` under /usr/bin/time -v; return the process, its wall seconds and its peak RSS in GB."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if wall is None or rss is None:
        sys.exit(f"could not read /usr/bin/time output of {' '.join(cmd)}:\n{proc.stderr[-2000:]}")
    h, m, s = wall.groups()
    return proc, int(h or 0) * 3600 + int(m) * 60 + float(s), int(rss.group(1)) / 1e6


def save_like(dumps: list[Path], folder: Path) -> tuple[int, float]:
    """Re-write every dataset of the dumps with np.save; return the bytes and the seconds it took."""
    import h5py
    import numpy as np

    total, seconds = 0, 0.0
    for dump in dumps:
        with h5py.File(dump) as f:
            arrays = []
            f.visititems(lambda _, obj: arrays.append(obj) if isinstance(obj, h5py.Dataset) else None)
            for i, ds in enumerate(arrays):
                a = ds[()]
                t = time.perf_counter()
                np.save(folder / f"{dump.stem}-{i}.npy", a)
                seconds += time.perf_counter() - t
                total += np.asarray(a).nbytes
    return total, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=2, help="plain forward+backward passes per side")
    parser.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    env = {**os.environ, "LAYERDIFF_GPT_SIZE": args.size}
    if args.side:
        print(json.dumps(plain(args.side, args.steps)))
        return

    rows = []
    for side in SIDES:
        proc, wall, rss = timed([sys.executable, __file__, "--size", args.size, "--steps", str(args.steps), "--side", side], env)
        if proc.returncode:
            sys.exit(f"the plain {side} run failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((side, r, wall, rss))

    layerdiff = shutil.which("layerdiff") or sys.exit("layerdiff is not on PATH: pip install -e '.[torch]'")
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        out = Path(tmp) / "dumps"
        proc, ld_wall, ld_rss = timed([layerdiff, "run", "--json", "-o", str(out), *map(str, SIDES.values())], env)
        if proc.returncode not in (0, 1):
            sys.exit(f"layerdiff run could not compare (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        report = json.loads(proc.stdout)
        dumps = sorted(out.glob("*.h5"))
        dump_bytes = sum(p.stat().st_size for p in dumps)
        (Path(tmp) / "npy").mkdir()
        save_bytes, save_s = save_like(dumps, Path(tmp) / "npy")

    worst = max((t["max_abs"] for layer in report["layers"] for t in layer["tensors"]), default=0.0)
    steps_sum = sum(min(r["step_s"]) for _, r, _, _ in rows)
    walls_sum = sum(wall for *_, wall, _ in rows)
    print(f"GPT ({args.size}), float64, {os.cpu_count()} cores; plain: {args.steps} forward+backward passes per process")
    print(f"{'':28}{'build s':>9}{'fwd+bwd s':>11}{'process s':>11}{'peak GB':>9}")
    for side, r, wall, rss in rows:
        steps = "/".join(f"{s:.2f}" for s in r["step_s"])
        print(f"{'plain ' + side:28}{r['build_s']:>9.2f}{steps:>11}{wall:>11.1f}{rss:>9.2f}")
    print(f"{'layerdiff run':28}{'':>9}{'':>11}{ld_wall:>11.1f}{ld_rss:>9.2f}")
    print()
    print(f"layerdiff run / sum of plain processes:        {ld_wall / walls_sum:.2f}x  ({ld_wall:.1f} s / {walls_sum:.1f} s)")
    print(f"layerdiff run / sum of one fwd+bwd per side:   {ld_wall / steps_sum:.1f}x  ({ld_wall:.1f} s / {steps_sum:.2f} s)")
    print(f"dumps: {dump_bytes / 1e9:.2f} GB on disk; np.save of the same arrays ({save_bytes / 1e9:.2f} GB): "
          f"{save_s:.1f} s, {save_bytes / 1e9 / save_s:.2f} GB/s")
    budget = 3 * (walls_sum + save_s)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    print(f"target 3 x (plain processes + np.save of the dumps) = 3 x ({walls_sum:.1f} + {save_s:.1f}) s = {budget:.1f} s: "
          f"{'met' if ld_wall <= budget else 'missed'}; peak memory {ld_rss:.1f} GB of {ram:.0f} GB")
    verdict = "no divergence" if report["match"] else f"DIVERGE at {report['forward']['first_divergence'] or report['backward']['first_divergence']}"
    print(f"comparison: {verdict}; largest error of any layer tensor {worst:.1e}")


if __name__ == "__main__":
    main()
