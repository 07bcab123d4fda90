"""--dtype native on every fixture pair: false alarms, and bugs found by the size of their effect.

    python benchmarks/precision.py                  # on the CPU, every clean pair
    python benchmarks/precision.py --device cuda    # side B on the GPU (float32 there is float32: TF32 off;
                                                    # a "tf32" row with it on); skipped with a message without CUDA
    python benchmarks/precision.py --pairs mlp,cnn  # some pairs only
    python benchmarks/precision.py --corpus         # the foreign corpus's PyTorch pairs (Hugging Face GPT-2, BERT)

For every clean fixture pair (``<net>_numpy.py`` against ``<net>_torch.py``; with ``--corpus`` the foreign corpus's
Hugging Face pairs, ``hf_gpt2.py`` against ``hf_gpt2_ref.py`` and BERT's), side A cast to float64 and side B
(PyTorch) in float16, bfloat16 and float32:

- clean: the pair as it is. A false alarm is any culprit, or any layer said to lose more than its precision explains;
- a bug in the code: one layer of B's output scaled by 1 + e in every precision (a factor left in), so its float64
  rerun has it too. Found when every culprit named is that layer, the first a forward one;
- a bug on the low-precision path only: the same scale, applied only where the layer does not compute in float64
  (a half-precision kernel of its own). The float64 reruns agree; found when the precision judgement names that
  layer, and no other.

Each bug is put in turn into B's first, middle and last layer that holds parameters, at e = 0.1%, 1%, 5%, 20%. The
table counts, per precision and effect, the bugs found at exactly their layer; a bug named elsewhere is counted
apart ("misplaced"), never as found.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from layerdiff import modelfile, precision, runner, twins
from layerdiff.records import InMemory

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CORPUS = Path(__file__).resolve().parent / "corpus"
PAIRS = {net: (FIXTURES / f"{net}_numpy.py", FIXTURES / f"{net}_torch.py") for net in ("mlp", "cnn", "norm", "deep", "gpt", "resnet")}
CORPUS_PAIRS = {net: (CORPUS / f"{net}.py", CORPUS / f"{net}_ref.py") for net in ("hf_gpt2", "hf_bert")}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
EFFECTS = (0.001, 0.01, 0.05, 0.2)
KINDS = ("code", "low-precision path")


@dataclass
class Tally:
    found: int = 0
    misplaced: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    def cell(self) -> str:
        total = self.found + len(self.misplaced) + len(self.missed)
        return f"{self.found}/{total}" + (f" ({len(self.misplaced)} misplaced)" if self.misplaced else "")


def scaled(module: torch.nn.Module, factor: float, everywhere: bool) -> None:
    """Scale ``module``'s output by ``factor``: in every precision, or only below float64."""

    def hook(m: torch.nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        return out * factor if everywhere or out.dtype != torch.float64 else out

    module.register_forward_hook(hook)


def targets(net: torch.nn.Module) -> list[str]:
    """B's first, middle and last module holding parameters of its own."""
    held = [name for name, m in net.named_modules() if name and any(True for _ in m.parameters(recurse=False))]
    return sorted({held[0], held[len(held) // 2], held[-1]}, key=held.index)


def side_b(path: Path, dtype: torch.dtype, device: str) -> modelfile.Model:
    model = modelfile.load(path)
    model.obj.to(device=device, dtype=dtype)
    if isinstance(model.loss, torch.nn.Module):
        model.loss.to(device=device, dtype=dtype)
    return model


def side_a(path: Path) -> modelfile.Model:
    model = modelfile.load(path)
    runner.prepare(model, "float64")  # deep_numpy and the corpus compute in float32: cast, so that A is float64
    return model


def judged(
    paths: tuple[Path, Path], dtype: torch.dtype, device: str, bug: tuple[str, float, bool] | None
) -> tuple[list[tuple[str, str]], list[str]]:
    """One native run: the culprits (layer of B, pass) and the layers of B said to lose more than they explain."""
    a, b = side_a(paths[0]), side_b(paths[1], dtype, device)
    if bug is not None:
        layer, effect, everywhere = bug
        scaled(b.obj.get_submodule(layer), 1 + effect, everywhere)
    pair = twins.run_pair(a, b, "native", twice=False)
    result = twins.compared(InMemory(pair.a, a.source), InMemory(pair.b, b.source), pair, None, None, None)
    culprits = [(c.layer_b, c.pass_) for c in result.culprits or []]
    rounding = [layer for p in result.precision if p.side == "b" for layer, _ in precision.culprits(p)]
    return culprits, rounding


def run(nets: dict[str, tuple[Path, Path]], device: str, dtypes: dict[str, torch.dtype]) -> None:
    alarms = {d: Tally() for d in dtypes}
    found = {(d, k, e): Tally() for d in dtypes for k in KINDS for e in EFFECTS}
    start = time.time()
    for net, paths in nets.items():
        layers = targets(side_b(paths[1], torch.float32, "cpu").obj)
        for name, dtype in dtypes.items():
            configure(name, device)
            culprits, rounding = judged(paths, dtype, device, None)
            tally = alarms[name]
            if culprits or rounding:
                tally.missed.append(f"{net}: {culprits + [(l, 'precision') for l in rounding]}")
            else:
                tally.found += 1
            for layer in layers:
                for kind in KINDS:
                    for effect in EFFECTS:
                        culprits, rounding = judged(paths, dtype, device, (layer, effect, kind == "code"))
                        named = [l for l, _ in culprits] if kind == "code" else rounding + [l for l, _ in culprits]
                        tally = found[name, kind, effect]
                        if named and set(named) == {layer} and (kind != "code" or culprits[0][1] == "forward"):
                            tally.found += 1
                        elif named:
                            tally.misplaced.append(f"{net}.{layer} named at {', '.join(dict.fromkeys(named))}")
                        else:
                            tally.missed.append(f"{net}.{layer}")
        print(f"  {net}: done at {time.time() - start:.0f} s", file=sys.stderr)
    table(alarms, found, dtypes, nets, device)


def configure(name: str, device: str) -> None:
    """On a GPU, float32 is float32 (TF32 off) and "tf32" lets matrix products and convolutions use it."""
    if device.startswith("cuda"):
        tf32 = name == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")


def table(alarms: dict[str, Tally], found: dict[tuple[str, str, float], Tally], dtypes: dict[str, Any], nets: Any, device: str) -> None:
    sizes = " | ".join(f"{e:.1%}" for e in EFFECTS)
    print(f"\npairs: {', '.join(nets)}; side A in float64, side B on {device}; bugs in B's first, middle and last layer with parameters\n")
    print(f"| B in | clean pairs passed | bug in the code, found at its layer: {sizes} | bug on the low-precision path only: {sizes} |")
    print("| --- | --- | " + " | ".join("---" for _ in EFFECTS) + " | " + " | ".join("---" for _ in EFFECTS) + " |")
    for name in dtypes:
        cells = [found[name, kind, e].cell() for kind in KINDS for e in EFFECTS]
        print(f"| {name} | {alarms[name].cell()} | " + " | ".join(cells) + " |")
    for name in dtypes:
        if alarms[name].missed:
            print(f"false alarms in {name}: {'; '.join(alarms[name].missed)}")
        for kind in KINDS:
            for e in EFFECTS:
                if found[name, kind, e].missed:
                    print(f"missed in {name}, {kind}, {e:.1%}: {', '.join(found[name, kind, e].missed)}")
                if found[name, kind, e].misplaced:
                    print(f"misplaced in {name}, {kind}, {e:.1%}: {'; '.join(found[name, kind, e].misplaced)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="where side B runs: cpu, or cuda")
    parser.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated: " + ", ".join(PAIRS))
    parser.add_argument("--corpus", action="store_true", help="the corpus's Hugging Face pairs instead (pip install -e '.[corpus]')")
    args = parser.parse_args()
    dtypes = dict(DTYPES)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print(f"--device {args.device}: no CUDA device here (torch {torch.__version__}); skipped.")
            return
        dtypes["tf32"] = torch.float32
    nets = CORPUS_PAIRS if args.corpus else {n: PAIRS[n] for n in args.pairs.split(",") if n}
    if args.corpus:
        corpus_as_they_are()
    run(nets, args.device, dtypes)


def corpus_as_they_are() -> None:
    """Every clean pair of the corpus with --dtype native as its files build it (float32, most): each side that
    computes below float64, its worst tensor's rounding as a share of what its precision explains."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from isolation import CORPUS_PAIRS as ALL

    import layerdiff

    print("| corpus pair, as built | side | dtype | layers judged | worst share of what is explained | verdict |")
    print("| --- | --- | --- | --- | --- | --- |")
    for net, a, b, _ in ALL:
        try:
            result = layerdiff.compare_paths(CORPUS / a, CORPUS / b, dtype="native", once=True)
        except layerdiff.LayerdiffError as exc:
            print(f"| {net} | | | | exit 2: {str(exc)[:60]}… | |")
            continue
        for p in result.comparison.precision:
            share = max((t.lost / t.explained for layer in p.layers for t in layer.tensors), default=0.0)
            print(f"| {net} | {p.side} | {p.dtype} | {len(p.layers)} | {share:.2f} | {'ok' if p.ok else 'CULPRIT'} |")


if __name__ == "__main__":
    main()
