"""layerdiff's benchmark: every figure of the README's benchmark section, measured side by side in one invocation.

    python benchmarks/run.py            # the MLP (wide), ResNet-18 and GPT-2 small: about 10 minutes, 10 GB
    python benchmarks/run.py --quick    # the tiny sizes the tests use: a smoke run of about a minute
    python benchmarks/run.py --llama none   # without the 1B Llama pair (benchmarks/llama.py), which takes 10 minutes

Per model, NumPy (side A) against PyTorch (side B), both in float64:
- plain: one forward+backward of the fixture's own model, without layerdiff; capture: one iteration through
  layerdiff's adapter (hooks or taps, every layer's tensors copied out); each the fastest of a few, interleaved
  in one process so that both see the same machine;
- dump: ``store.write`` of the captured traces against ``np.save`` of the same arrays, and against h5py alone
  (``create_dataset`` of each, nothing else), interleaved, each after ``os.sync()``, the median of five of each
  (the page cache makes single writes erratic);
- compare: ``compare`` of the two dumps read from disk (as ``layerdiff compare a.h5 b.h5``): GB/s of tensor data
  read, and its peak traced memory (tracemalloc) against the dumps' size and the largest tensor;
- run: the whole ``layerdiff run`` (each side twice, the replay, the dumps, the comparison) in a fresh process, wall
  time and peak resident memory (``/usr/bin/time -v``), against the two plain processes (load the model file, one
  forward+backward) plus the ``np.save`` time of the dumps.
Then the peak memory of each whole run against both plain sides held in one process (what ``run`` holds at least),
and the same for the deep_* chain at 10 and 100 layers; the memory of ``compare`` as the number of layers grows
10x, and the effect of each dump option on the last model. Then training steps (``--steps``), on the MLP with Adam on both sides (``steps_adam_*``): in one process,
``layerdiff.run(..., steps=10)`` against ten plain training steps of both sides (forward, backward, the file's own
optimizer step), beside ``layerdiff.run`` of one iteration against one plain forward+backward of both sides (the
one-step ratio, the target); each less the loading of the two model files, which both do once. And the peak
resident memory of ``layerdiff run --steps K`` (a fresh process each) for two K, which must not grow with K.

Then the peers, on the PyTorch side of each model, in a child process of their own: layerdiff's capture (forward and
backward, in memory, then with its dump written) beside torchlens (``torchlens.trace`` with every layer's
activations saved: its forward alone; measured last, since its first call wraps torch's functions for the rest of
the process, untimed) and a hand-rolled script (``register_forward_hook`` on every leaf module, ``np.save`` of each
output: the forward alone), each the fastest of a few, with its peak resident memory above what the process held
before it (``/proc/self/clear_refs``). torchlens is optional (``pip install -e '.[benchmark]'``): without it, or on a
model it cannot run, the table says so and measures the rest.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which this workplace sets for old OpenBLAS builds and which slow a current
NumPy, are left out of every process it starts; the BLAS kernel in use is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# name: (side A, side B, size variable, full size, quick size, a --layers glob for one block)
MODELS = {
    "mlp": ("mlp_numpy.py", "mlp_torch.py", "LAYERDIFF_MLP_SIZE", "wide", "tiny", "fc2"),
    "resnet18": ("resnet_numpy.py", "resnet_torch.py", "LAYERDIFF_RESNET_SIZE", "resnet18", "tiny", "layer4.*"),
    "gpt2-small": ("gpt_numpy.py", "gpt_torch.py", "LAYERDIFF_GPT_SIZE", "small", "tiny", "blocks.1.*"),
}
TRAINING = ("steps_adam_numpy.py", "steps_adam_torch.py")  # the MLP with Adam on both sides, sized as mlp_*
STEPS, MEMORY_STEPS = 10, (2, 12)
OPTIONS = [[], ["--once"], ["--skip-copied-weights"], ["--compression", "lzf"], ["--stats-only"], ["--layers"]]
GB = 1e9


def child_env(model: str, quick: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    _, _, var, full, small, _ = MODELS[model]
    return {**env, var: small if quick else full}


# ---------------------------------------------------------------- one model, in a child process

def plain_step(model: Any, feed: Any) -> float:
    """One forward+backward of the user's own model and loss, as its author would run it."""
    obj, loss, (x,), targets = model.handle, model.spec.loss, feed.inputs, feed.targets
    start = time.perf_counter()
    if model.adapter.name == "torch":
        import torch

        obj.zero_grad(set_to_none=True)
        loss(obj(torch.from_numpy(x)), torch.from_numpy(targets)).backward()
    else:
        loss.forward(obj.forward(x), targets)
        obj.backward(loss.backward())
    return time.perf_counter() - start


def arrays_of(trace: Any) -> list[np.ndarray]:
    found = [v for r in trace.layers for v in r.tensors.values()] + list(trace.inputs) + list(trace.upstream)
    return found + [a for p in trace.params for a in (p.value, p.grad) if a is not None]


def measure(model_name: str, reps: int) -> dict[str, Any]:
    import h5py

    from layerdiff import modelfile, runner, store, sync

    a, b = (runner.prepare(modelfile.load(FIXTURES / f), "float64") for f in MODELS[model_name][:2])
    feed, _ = runner.make_feed([a, b], 0)
    src, links = runner.weight_links(a, b)
    carried = sync.carry(links, src)
    b.load(carried)
    # As run_pair: the parameter snapshots taken to copy the weights are what each trace records.
    snapshots = {"a": {p.name: p.value for p in src}, "b": carried}
    out: dict[str, Any] = {"sides": {}}
    traces = {}
    for side, m in (("a", a), ("b", b)):
        plain, captured = [], []
        for _ in range(reps):  # interleaved: both see the same state of the machine
            plain.append(plain_step(m, feed))
            start = time.perf_counter()
            traces[side] = runner.capture(m, feed, "float64", 0, "-", twice=False, values=snapshots[side])
            captured.append(time.perf_counter() - start)
        out["sides"][side] = {"framework": m.adapter.name, "plain_s": min(plain), "capture_s": min(captured)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        written, saved, raw = [], [], []
        arrays = [x for t in traces.values() for x in arrays_of(t)]
        for _ in range(reps + 2):
            clean(folder)
            start = time.perf_counter()
            paths = [store.write(t, folder / f"{side}.h5") for side, t in traces.items()]
            written.append(time.perf_counter() - start)
            os.sync()  # the dumps stay, for the comparison below; their pages are written out first
            start = time.perf_counter()
            for i, x in enumerate(arrays):
                np.save(folder / f"{i}.npy", x)
            saved.append(time.perf_counter() - start)
            os.sync()
            start = time.perf_counter()
            with h5py.File(folder / "raw.h5", "w") as f:  # h5py alone: what bounds store.write from above
                for i, x in enumerate(arrays):
                    f.create_dataset(str(i), data=x)
            raw.append(time.perf_counter() - start)
        out["array_bytes"] = sum(x.nbytes for x in arrays)
        out["dump_bytes"] = sum(p.stat().st_size for p in paths)
        # The page cache makes single writes erratic (the same np.save runs at 1 or 6 GB/s): the median of five each.
        out["write_s"], out["save_s"], out["h5py_s"] = (float(np.median(t)) for t in (written, saved, raw))
        out["largest_tensor"] = max(x.nbytes for x in arrays)
        compared = [v for t in traces.values() for r in t.layers for v in r.tensors.values()]
        compared += [p.grad for t in traces.values() for p in t.params if p.grad is not None]
        out["compare_bytes"] = sum(x.nbytes for x in compared)
        del traces, arrays, compared
        out["compare_s"], out["compare_peak"], out["match"] = compare_dumps(paths, reps)
    return out


def training_step(model: Any, feed: Any) -> float:
    """One plain training step of the user's own model: forward, backward, its own optimizer's step."""
    seconds = plain_step(model, feed)
    start = time.perf_counter()
    model.model.optimizer.step()
    return seconds + time.perf_counter() - start


def training(reps: int) -> dict[str, Any]:
    """``layerdiff.run`` of STEPS steps and of one iteration, and the plain steps they are measured against."""
    import layerdiff
    from layerdiff import modelfile, runner

    files = [FIXTURES / f for f in TRAINING]
    for f in files:
        modelfile.load(f)  # the frameworks imported before anything is timed
    load, plain, steps, one = [], [], [], []
    for _ in range(reps):
        start = time.perf_counter()
        sides = [runner.prepare(modelfile.load(f), "float64") for f in files]
        load.append(time.perf_counter() - start)
        feed, _ = runner.make_feed(sides, 0)
        plain.append(min(sum(training_step(s, feed) for s in sides) for _ in range(3)))
        plain_once = min(sum(plain_step(s, feed) for s in sides) for _ in range(3))
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            layerdiff.run(*files, out=Path(tmp) / "steps", steps=STEPS)
            steps.append(time.perf_counter() - start)
            start = time.perf_counter()
            layerdiff.run(*files, out=Path(tmp) / "one")
            one.append((time.perf_counter() - start, plain_once))
    loading = min(load)
    return {"load_s": loading, "plain_step_s": min(plain), "steps_s": min(steps) - loading,
            "one_s": min(one)[0] - loading, "plain_once_s": min(one)[1]}


def clean(folder: Path) -> None:
    """An empty folder and no dirty pages left: each write starts as the last one did."""
    for f in folder.iterdir():
        f.unlink()
    os.sync()


def compare_dumps(paths: list[Path], reps: int) -> tuple[float, int, bool]:
    """The fastest of ``reps`` comparisons of two dumps, and the peak memory one more of them traces."""
    from layerdiff import store
    from layerdiff.compare import compare

    times, match = [], False
    for _ in range(reps):
        with store.Dump(paths[0]) as da, store.Dump(paths[1]) as db:
            start = time.perf_counter()
            match = compare(da, db).match
            times.append(time.perf_counter() - start)
    with store.Dump(paths[0]) as da, store.Dump(paths[1]) as db:
        tracemalloc.start()
        compare(da, db)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return min(times), peak, match


def flat(layers: int, width: int) -> dict[str, Any]:
    """Compare's peak memory on two dumps of a chain of ``layers`` dense layers (synthetic, written directly)."""
    from layerdiff import store
    from layerdiff.records import LayerRecord, ParamRecord, Trace

    rng = np.random.default_rng(0)
    weight, act = rng.standard_normal((width, width)), rng.standard_normal((64, width))
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for side, scale in (("a", 1.0), ("b", 1.0 + 1e-15)):
            kinds = ("input", "output", "grad_output", "grad_input")
            records = [LayerRecord(f"fc{i}", "Dense", {k: act * scale for k in kinds}, [f"fc{i}.W"]) for i in range(layers)]
            params = [ParamRecord(f"fc{i}.W", f"fc{i}", "out in", weight, weight * scale) for i in range(layers)]
            paths.append(store.write(Trace(records, params, 0.0), Path(tmp) / f"{side}.h5"))
        size = sum(p.stat().st_size for p in paths)
        seconds, peak, _ = compare_dumps(paths, 1)
    return {"layers": layers, "dump_bytes": size, "compare_peak": peak, "compare_s": seconds, "largest_tensor": weight.nbytes}


def rss(field: str = "VmRSS") -> int:
    """This process's resident memory now (``VmRSS``) or at its peak since the last ``clear_refs`` (``VmHWM``), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def timed_peak(fn: Any) -> tuple[float, int | None]:
    """Seconds of one call and its peak resident memory above what the process held before it (None where the peak
    cannot be reset); what the call returned is dropped after."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # memory freed before stays resident otherwise, hiding a peak in it
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the resident size now
        base: int | None = rss()
    except OSError:
        base = None
    start = time.perf_counter()
    kept = fn()
    seconds = time.perf_counter() - start
    peak = None if base is None else max(0, rss("VmHWM") - base)
    del kept
    return seconds, peak


def hooks_and_save(net: Any, x: Any, folder: Path) -> None:
    """The hand-rolled alternative to layerdiff: a forward hook on every leaf module saving its output with np.save."""
    import itertools

    count = itertools.count()

    def save(module: Any, args: Any, output: Any) -> None:
        if hasattr(output, "detach"):
            np.save(folder / f"{next(count)}.npy", output.detach().numpy())

    handles = [m.register_forward_hook(save) for m in net.modules() if not any(True for _ in m.children())]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()


def peers(model_name: str, reps: int) -> dict[str, Any]:
    """The PyTorch side of a model: plain, layerdiff's capture, the hook script, then torchlens; seconds and peaks."""
    import torch

    from layerdiff import modelfile, runner, store

    m = runner.prepare(modelfile.load(FIXTURES / MODELS[model_name][1]), "float64")
    feed, _ = runner.make_feed([m], 0)
    values = {p.name: p.value for p in m.parameters()}  # as run_pair: the weights' snapshots are the trace's
    x = torch.from_numpy(feed.inputs[0])

    def capture() -> Any:
        return runner.capture(m, feed, "float64", 0, "-", twice=False, values=values)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def dumped() -> Any:
            return store.write(capture(), folder / "b.h5")

        def saved() -> None:
            hooks_and_save(m.handle, x, folder)

        tools = {"plain forward": lambda: m.handle(x), "plain forward+backward": lambda: plain_step(m, feed),
                 "layerdiff capture": capture, "layerdiff capture + dump": dumped, "hooks + np.save": saved}
        for fn in tools.values():  # a first call of each, untimed (lazy initialisations, the page cache)
            fn()
            clean(folder)
        found: dict[str, list[tuple[float, int | None]]] = {k: [] for k in tools}
        for _ in range(reps):  # interleaved: all see the same state of the machine
            for name, fn in tools.items():
                found[name].append(timed_peak(fn))
                clean(folder)
    out: dict[str, Any] = {k: {"s": min(t for t, _ in v), "peak": max((p for _, p in v if p is not None), default=None)}
                           for k, v in found.items()}
    try:
        import torchlens
        from torchlens.options import CaptureOptions

        def lens() -> Any:
            return torchlens.trace(m.handle, x, capture=CaptureOptions(layers_to_save="all"))

        lens()  # the first call wraps torch's functions: untimed
        runs = [timed_peak(lens) for _ in range(reps)]
        out["torchlens"] = {"s": min(t for t, _ in runs), "peak": max((p for _, p in runs if p is not None), default=None)}
    except Exception as exc:  # not installed, or it cannot run this model: said, and the rest stands
        out["torchlens_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    return out


def plain_process(paths: str) -> None:
    """What the user's own script does: load the model file, one forward+backward; for comma-separated files, each
    of them in this one process (both sides held at once, as ``layerdiff run`` holds them: its memory's baseline)."""
    from layerdiff import modelfile, runner

    sides = [runner.prepare(modelfile.load(path), "float64") for path in paths.split(",")]
    feed = runner.make_feed(sides, 0)[0]
    for side in sides:
        plain_step(side, feed)


def chain_env(depth: int, quick: bool) -> dict[str, str]:
    env = child_env("mlp", quick)
    return {**env, "LAYERDIFF_DEEP_DEPTH": str(depth), "LAYERDIFF_DEEP_WIDTH": "64" if quick else "1024"}


def chain(depth: int, quick: bool, folder: Path) -> dict[str, Any]:
    """``layerdiff run`` of the deep_* chain at ``depth`` layers, against both plain sides in one process."""
    env = chain_env(depth, quick)
    a, b = (str(FIXTURES / f) for f in ("deep_numpy.py", "deep_torch.py"))
    _, plain_wall, plain_rss = timed([sys.executable, __file__, "--plain", f"{a},{b}"], env)
    out = Path(tempfile.mkdtemp(dir=folder))
    proc, wall, rss = timed([layerdiff_exe(), "run", "--json", "-o", str(out), a, b], env)
    size = sum(p.stat().st_size for p in out.glob("*.h5"))
    shutil.rmtree(out)
    return {"depth": depth, "plain_wall": plain_wall, "plain_rss": plain_rss, "wall": wall, "rss": rss,
            "dump_bytes": size, "match": json.loads(proc.stdout)["match"]}


# ---------------------------------------------------------------- processes, timed

def timed(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run ``cmd`` under /usr/bin/time -v; return the process, its wall seconds and its peak RSS in bytes."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode not in (0, 1) or wall is None or rss is None:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    h, m, s = wall.groups()
    return proc, int(h or 0) * 3600 + int(m) * 60 + float(s), int(rss.group(1)) * 1024


def child(args: list[str], env: dict[str, str]) -> Any:
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"benchmark step {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def layerdiff_exe() -> str:
    beside = Path(sys.executable).with_name("layerdiff")  # this environment's, before another one on PATH
    return str(beside) if beside.exists() else shutil.which("layerdiff") or sys.exit("layerdiff is not on PATH: pip install -e '.[test]'")


def layerdiff_run(model: str, env: dict[str, str], options: list[str], folder: Path) -> dict[str, Any]:
    a, b = (str(FIXTURES / f) for f in MODELS[model][:2])
    exe = layerdiff_exe()
    out = Path(tempfile.mkdtemp(dir=folder))
    proc, wall, rss = timed([exe, "run", "--json", "-o", str(out), *options, a, b], env)
    report = json.loads(proc.stdout)
    return {"wall": wall, "rss": rss, "dump_bytes": sum(p.stat().st_size for p in out.glob("*.h5")), "match": report["match"]}


def steps_run(env: dict[str, str], k: int, folder: Path) -> dict[str, Any]:
    """``layerdiff run --steps k`` in a fresh process: its peak resident memory; its dumps removed after."""
    a, b = (str(FIXTURES / f) for f in TRAINING)
    exe = layerdiff_exe()
    out = Path(tempfile.mkdtemp(dir=folder))
    proc, wall, rss = timed([exe, "run", "--json", "-o", str(out), "--steps", str(k), a, b], env)
    size = sum(p.stat().st_size for p in out.glob("*.h5"))
    shutil.rmtree(out)
    return {"wall": wall, "rss": rss, "dump_bytes": size, "match": json.loads(proc.stdout)["match"]}


def blas() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "(pip install threadpoolctl to see which)"
    return ", ".join(f"{i['internal_api']} {i.get('architecture', '')} x{i['num_threads']}" for i in threadpool_info())


# ---------------------------------------------------------------- the table

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tiny sizes: a smoke run")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--plain", help=argparse.SUPPRESS)
    parser.add_argument("--flat", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--blas", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--training", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--peers", help=argparse.SUPPRESS)
    parser.add_argument("--llama", choices=["1b", "tiny", "none"], help="the Llama pair of benchmarks/llama.py at this "
                        "size, last (default: 1b; none with --quick): each step a process of its own, some 10 minutes")
    args = parser.parse_args()
    reps = 2 if args.quick else 3
    if args.measure or args.plain or args.flat or args.blas or args.training or args.peers:  # a child process
        if args.peers:
            print(json.dumps(peers(args.peers, reps)))
        elif args.training:
            print(json.dumps(training(1 if args.quick else 2)))
        elif args.measure:
            print(json.dumps(measure(args.measure, reps)))
        elif args.plain:
            plain_process(args.plain)
        elif args.flat:
            print(json.dumps(flat(args.flat, 64 if args.quick else 1024)))
        else:
            print(json.dumps(blas()))
        return

    models = [m for m in args.models.split(",") if m]
    if not models or set(models) - set(MODELS):
        sys.exit(f"--models takes a comma-separated list of: {', '.join(MODELS)}")
    quick = ["--quick"] if args.quick else []
    env0 = child_env(models[0], args.quick)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    print(f"layerdiff benchmark{' --quick (tiny sizes)' if args.quick else ''}: {os.cpu_count()} cores, {ram:.0f} GB, "
          f"BLAS {child(['--blas'], env0)}, float64")
    rows = {}
    for model in models:
        env = child_env(model, args.quick)
        m = child(["--measure", model, *quick], env)
        plain_walls = [timed([sys.executable, __file__, "--plain", str(FIXTURES / f)], env)[1] for f in MODELS[model][:2]]
        m["plain_pair_rss"] = timed([sys.executable, __file__, "--plain", ",".join(str(FIXTURES / f) for f in MODELS[model][:2])], env)[2]
        options = [o + [MODELS[model][5]] if o == ["--layers"] else o for o in OPTIONS]
        with tempfile.TemporaryDirectory() as tmp:
            runs = {" ".join(o): layerdiff_run(model, env, o, Path(tmp)) for o in (options if model == models[-1] else options[:1])}
            again = layerdiff_run(model, env, [], Path(tmp))  # the plain run twice: the faster stands
            runs[""] = min(runs[""], again, key=lambda r: r["wall"])
        rows[model] = (m, plain_walls, runs)
    flats = [child(["--flat", str(n), *quick], env0) for n in (10, 100)]
    with tempfile.TemporaryDirectory() as tmp:
        chains = [chain(n, args.quick, Path(tmp)) for n in (10, 100)]
    env_mlp = child_env("mlp", args.quick)
    trained = child(["--training", *quick], env_mlp)
    with tempfile.TemporaryDirectory() as tmp:
        memory = {k: steps_run(env_mlp, k, Path(tmp)) for k in MEMORY_STEPS}
    lenses = {model: child(["--peers", model, *quick], child_env(model, args.quick)) for model in models}

    print("\nper side: one forward+backward, plain and through layerdiff's capture (dump writing excluded)")
    print(f"{'model':12}{'side':8}{'plain s':>9}{'capture s':>11}{'ratio':>7}")
    for model, (m, _, _) in rows.items():
        for side in m["sides"].values():
            ratio = side["capture_s"] / side["plain_s"]
            print(f"{model:12}{side['framework']:8}{side['plain_s']:>9.3f}{side['capture_s']:>11.3f}{ratio:>7.2f}")
    print("\ndumps of both sides: store.write against np.save of the same arrays; compare of the two dumps from disk")
    print(f"{'model':12}{'dumps GB':>9}{'write GB/s':>12}{'np.save GB/s':>14}{'ratio':>7}{'h5py GB/s':>11}"
          f"{'compare GB/s':>14}{'peak MB':>9}{'largest MB':>12}")
    for model, (m, _, _) in rows.items():
        write, save, h5 = (m["array_bytes"] / m[k] / GB for k in ("write_s", "save_s", "h5py_s"))
        speed = m["compare_bytes"] / m["compare_s"] / GB
        print(f"{model:12}{m['dump_bytes'] / GB:>9.3f}{write:>12.2f}{save:>14.2f}{write / save:>7.2f}{h5:>11.2f}"
              f"{speed:>14.2f}{m['compare_peak'] / 1e6:>9.1f}{m['largest_tensor'] / 1e6:>12.1f}")
    print("\nthe whole `layerdiff run` (a fresh process) against the plain processes (load, one forward+backward) and np.save")
    print(f"{'model':12}{'plain A+B s':>12}{'np.save s':>11}{'run s':>8}{'ratio':>7}{'peak GB':>9}")
    for model, (m, walls, runs) in rows.items():
        base, run = sum(walls) + m["save_s"], runs[""]
        print(f"{model:12}{sum(walls):>12.1f}{m['save_s']:>11.1f}{run['wall']:>8.1f}{run['wall'] / base:>7.2f}"
              f"{run['rss'] / GB:>9.2f}")
    print("\npeak memory of the whole `layerdiff run` above both plain sides in one process (load both, one forward+backward each)")
    print(f"{'model':12}{'plain A+B GB':>13}{'run GB':>8}{'excess GB':>10}{'largest MB':>12}")
    for model, (m, walls, runs) in rows.items():
        extra = runs[""]["rss"] - m["plain_pair_rss"]
        print(f"{model:12}{m['plain_pair_rss'] / GB:>13.2f}{runs['']['rss'] / GB:>8.2f}{extra / GB:>10.2f}{m['largest_tensor'] / 1e6:>12.1f}")
    print(f"{'':12}{'plain A+B GB':>13}{'run GB':>8}{'excess GB':>10}{'dumps GB':>10}{'run s':>7}{'plain s':>9}   the deep_* chain, width {chain_env(1, args.quick)['LAYERDIFF_DEEP_WIDTH']}")
    for c in chains:
        extra = c["rss"] - c["plain_rss"]
        print(f"{str(c['depth']) + ' layers':12}{c['plain_rss'] / GB:>13.2f}{c['rss'] / GB:>8.2f}{extra / GB:>10.2f}"
              f"{c['dump_bytes'] / GB:>10.3f}{c['wall']:>7.1f}{c['plain_wall']:>9.1f}")
    print("\ncompare's peak memory as the layers grow 10x (a chain of dense layers, both dumps read from disk)")
    print(f"{'layers':>8}{'dumps MB':>10}{'peak MB':>9}{'largest MB':>12}")
    for f in flats:
        print(f"{f['layers']:>8}{f['dump_bytes'] / 1e6:>10.1f}{f['compare_peak'] / 1e6:>9.1f}{f['largest_tensor'] / 1e6:>12.1f}")
    print(f"\ntraining steps: mlp with Adam (steps_adam_*), in one process, less loading the files ({trained['load_s']:.2f} s)")
    per_step, one = trained["steps_s"] / STEPS / trained["plain_step_s"], trained["one_s"] / trained["plain_once_s"]
    print(f"{'run':26}{'layerdiff s':>12}{'plain s':>9}{'ratio':>8}")
    print(f"{f'--steps {STEPS}, per step':26}{trained['steps_s'] / STEPS:>12.3f}{trained['plain_step_s']:>9.3f}{per_step:>8.2f}")
    print(f"{'one iteration (target)':26}{trained['one_s']:>12.3f}{trained['plain_once_s']:>9.3f}{one:>8.2f}")
    print(f"{'steps':>6}{'run s':>8}{'peak GB':>9}{'dumps GB':>10}{'match':>7}   (`layerdiff run --steps K`, a fresh process each)")
    for k, r in memory.items():
        print(f"{k:>6}{r['wall']:>8.1f}{r['rss'] / GB:>9.2f}{r['dump_bytes'] / GB:>10.3f}{str(r['match']):>7}")
    print("\npeers, on the PyTorch side: capture time and peak memory above the loaded model (torchlens and the hook "
          "script record the forward alone)")
    print(f"{'model':12}{'tool':28}{'s':>8}{'x fwd+bwd':>11}{'peak MB':>9}")
    for model, p in lenses.items():
        for tool in ("plain forward", "plain forward+backward", "layerdiff capture", "layerdiff capture + dump",
                     "torchlens", "hooks + np.save"):
            if tool not in p:
                print(f"{model:12}{tool:28}  not measured: {p.get('torchlens_error', '')}")
                continue
            r, peak = p[tool], p[tool]["peak"]
            shown = "-" if peak is None else f"{peak / 1e6:.0f}"
            print(f"{model:12}{tool:28}{r['s']:>8.3f}{r['s'] / p['plain forward+backward']['s']:>11.2f}{shown:>9}")
        if "torchlens" in p:
            print(f"{model:12}{'layerdiff fwd+bwd / torchlens fwd':40}{p['layerdiff capture']['s'] / p['torchlens']['s']:>7.2f}  (target < 1)")
    print(f"\ndump options: `layerdiff run` on {models[-1]}")
    print(f"{'options':26}{'run s':>8}{'peak GB':>9}{'dumps GB':>10}{'match':>7}")
    for options, r in rows[models[-1]][2].items():
        print(f"{options or '(default)':26}{r['wall']:>8.1f}{r['rss'] / GB:>9.2f}{r['dump_bytes'] / GB:>10.3f}{str(r['match']):>7}")
    size = args.llama or ("none" if args.quick else "1b")
    if size != "none":
        llama(size)


def llama(size: str) -> None:
    """benchmarks/llama.py, its table printed as it goes: the 1B decoder's steps, each a process of its own."""
    print(f"\nthe Llama pair at {size} (benchmarks/llama.py --size {size} --skip-run)", flush=True)
    script = Path(__file__).with_name("llama.py")
    if subprocess.run([sys.executable, str(script), "--size", size, "--skip-run"], env=child_env("mlp", False)).returncode:
        sys.exit("benchmarks/llama.py failed")


if __name__ == "__main__":
    main()
