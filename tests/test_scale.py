"""Dumps that scale (--layers, --stats-only, --skip-copied-weights, --compression), compare in blocks, lazy
forcing, and the benchmark command; no timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from layerdiff import isolate, store, sync
from layerdiff.align import align
from layerdiff.layout import canonical
from layerdiff.metrics import diff
from layerdiff.stats import digest

from conftest import FIXTURES, expected, one_error_line

MLP, MLP_TORCH = FIXTURES / "mlp_numpy.py", FIXTURES / "mlp_torch.py"
GPT, GPT_TORCH = FIXTURES / "gpt_numpy.py", FIXTURES / "gpt_torch.py"


@pytest.fixture(autouse=True)
def tiny(monkeypatch):
    monkeypatch.setenv("LAYERDIFF_GPT_SIZE", "tiny")


def datasets(path: Path) -> dict[str, h5py.Dataset]:
    found = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: found.__setitem__(name, dict(obj.attrs) | {"_stored": obj.id.get_storage_size() > 0,
                     "_compression": obj.compression}) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_layers_records_only_matching_layers_and_compares_them(run_json, tmp_path):
    code, report = run_json(FIXTURES / "bug_gpt_gelu_exact_erf.py", GPT_TORCH, "--layers", "blocks.1.*", "-o", tmp_path / "o")
    assert code == 1
    names = [layer["layer_a"] for layer in report["layers"]]
    assert names and all(n.startswith("blocks.1.") for n in names)
    assert report["forward"]["first_divergence"]["layer_a"] == "blocks.1.mlp.gelu"
    with store.Dump(tmp_path / "o" / "gpt_torch.h5") as d:
        assert {l.name for l in d.layers} == set(names)
        assert d.param_names() and all(n.startswith("blocks.1.") for n in d.param_names())


def test_repeated_layers_globs_add_up(run_json, tmp_path):
    _, report = run_json(MLP, MLP_TORCH, "--layers", "fc1", "--layers", "fc4", "-o", tmp_path / "o")
    assert [layer["layer_a"] for layer in report["layers"]] == ["fc1", "fc4"]


def test_a_layers_glob_matching_nothing_is_one_line_and_exit_2(cli):
    code, _, err = cli("run", MLP, MLP_TORCH, "--layers", "conv*")
    assert code == 2
    assert "--layers 'conv*' matches no layer of mlp_numpy.py or mlp_torch.py" in one_error_line(err)


def test_an_unknown_compression_is_one_line_and_exit_2_before_anything_runs(cli, tmp_path):
    code, _, err = cli("run", MLP, MLP_TORCH, "--compression", "zip")
    assert code == 2
    assert "--compression must be one of gzip, lzf, not 'zip'" in one_error_line(err)
    assert not (tmp_path / "layerdiff-out").exists()


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_compressed_dumps_round_trip(cli, tmp_path, compression):
    assert cli("run", MLP, MLP_TORCH, "-o", "plain")[0] == 0
    assert cli("run", MLP, MLP_TORCH, "-o", "packed", "--compression", compression)[0] == 0
    assert cli("compare", "packed/mlp_numpy.h5", "packed/mlp_torch.h5")[0] == 0
    big = [a for a in datasets(tmp_path / "packed/mlp_torch.h5").values() if a["_compression"]]
    assert big and all(a["_compression"] == compression for a in big)
    with store.Dump(tmp_path / "plain/mlp_torch.h5") as plain, store.Dump(tmp_path / "packed/mlp_torch.h5") as packed:
        for got, want in zip(packed.trace().layers, plain.trace().layers):
            assert all(np.array_equal(got.tensors[k], want.tensors[k]) for k in want.tensors)


def test_skipped_copied_weights_keep_their_hash_and_compare_still_works(cli, tmp_path):
    assert cli("run", MLP, MLP_TORCH, "-o", "o", "--skip-copied-weights")[0] == 0
    with store.Dump(tmp_path / "o/mlp_numpy.h5") as a, store.Dump(tmp_path / "o/mlp_torch.h5") as b:
        links = sync.link(list(a.params()), [b.spec(n) for n in b.param_names()], {}, "a", "b")
        for w in links:
            value = a.param(w.src)
            with h5py.File(tmp_path / "o/mlp_torch.h5") as f:
                group = next(g for g in f["params"].values() if g.attrs["name"] == w.dst)
                stored = group["value"]
                assert stored.attrs["stored"] == 0 and stored.id.get_storage_size() == 0
                assert stored.attrs["sha256"] == digest([canonical(value.value, value.layout)])
    assert cli("compare", "o/mlp_numpy.h5", "o/mlp_torch.h5")[0] == 0
    code, _, err = cli("compare", "o/mlp_torch.h5", MLP)
    assert code == 2 and "holds no value of parameter" in one_error_line(err)


@pytest.mark.parametrize("variant", ["bug_gpt_attention_scale_missing.py", "bug_masked_by_relu.py", "bug_missing_bias_grad.py"])
def test_stats_only_names_the_same_first_divergence_and_culprit(run_json, tmp_path, variant):
    reference = FIXTURES / expected(FIXTURES / variant)["reference"]
    _, full = run_json(FIXTURES / variant, reference, "-o", tmp_path / "full")
    _, stats = run_json(FIXTURES / variant, reference, "-o", tmp_path / "stats", "--stats-only")
    for pass_ in ("forward", "backward"):
        want, got = full[pass_]["first_divergence"], stats[pass_]["first_divergence"]
        assert (want and want["layer_a"]) == (got and got["layer_a"])
    assert full["culprits"] and stats["culprits"][0]["layer_a"] == full["culprits"][0]["layer_a"]
    assert stats["culprits"][0]["pass"] == full["culprits"][0]["pass"]
    size = {k: sum(p.stat().st_size for p in (tmp_path / k).glob("*.h5")) for k in ("full", "stats")}
    assert size["stats"] < size["full"]


def test_stats_only_dumps_keep_statistics_of_every_tensor_and_values_near_the_divergence(run_json, tmp_path):
    run_json(FIXTURES / "bug_gpt_attention_scale_missing.py", GPT_TORCH, "-o", tmp_path, "--stats-only")
    found = datasets(tmp_path / "bug_gpt_attention_scale_missing.h5")
    layers = {k: a for k, a in found.items() if k.startswith("layers/")}
    assert all(len(a["sha256"]) == 64 and len(a["sketch"]) == 2 for a in layers.values())
    kept = {k.split("/")[1].split("_", 1)[1] for k, a in layers.items() if a["_stored"]}
    assert "blocks.0.attn.sdpa" in kept and len(kept) < len({k.split("/")[1] for k in layers})
    with store.Dump(tmp_path / "bug_gpt_attention_scale_missing.h5") as d:
        hidden = next(l for l in d.layers if not l.tensors["output"].stored)
        with pytest.raises(store.DumpError, match="holds statistics only for layer"):
            d.tensor(hidden.index, "output")


def test_two_stats_only_dumps_compare_from_their_statistics(cli, tmp_path):
    cli("run", FIXTURES / "bug_transposed_weight.py", MLP_TORCH, "-o", "o", "--stats-only")
    with h5py.File(tmp_path / "o/bug_transposed_weight.h5", "a") as f:  # keep statistics only, everywhere
        for g in f["layers"].values():
            for ds in g.values():
                ds.attrs["stored"] = 0
    code, out, _ = cli("compare", "o/bug_transposed_weight.h5", "o/mlp_torch.h5", "--json")
    report = json.loads(out)
    assert code == 1 and report["forward"]["first_divergence"]["layer_a"] == "fc2"
    assert "statistics alone" in report["forward"]["first_divergence"]["note"]


def test_a_schema_1_dump_is_still_read(cli, tmp_path):
    cli("dump", MLP, "-o", "a.h5")
    with h5py.File(tmp_path / "a.h5", "a") as f:
        f.attrs["layerdiff_schema"] = 1
    assert cli("compare", "a.h5", MLP_TORCH)[0] == 0


def test_dump_command_takes_layers_and_compression(cli, tmp_path):
    assert cli("dump", MLP, "-o", "a.h5", "--layers", "fc*", "--compression", "lzf")[0] == 0
    with store.Dump(tmp_path / "a.h5") as d:
        assert [l.name for l in d.layers] == ["fc1", "fc2", "fc3", "fc4"]


def test_forcing_reads_a_layer_only_when_the_replay_asks(tmp_path, cli):
    cli("run", MLP, MLP_TORCH, "-o", "o")
    with store.Dump(tmp_path / "o/mlp_numpy.h5") as a, store.Dump(tmp_path / "o/mlp_torch.h5") as b:
        reads = []
        tensor = a.tensor
        a.tensor = lambda i, k: reads.append((i, k)) or tensor(i, k)
        forcing = isolate.forcing_from(a, b, align(a, b))
        assert reads == [] and "fc2" in forcing.outputs
        assert forcing.outputs.get("fc2")[0].shape == (8, 32) and len(reads) == 1


@pytest.mark.parametrize("make", [
    lambda r: (r.standard_normal((300, 700)).T, None),
    lambda r: (r.standard_normal((3, 3, 40, 50)).transpose(3, 2, 0, 1), None),
    lambda r: (r.standard_normal(200_001), np.nan),
    lambda r: (r.standard_normal((70, 1000)), np.inf),
], ids=["transposed", "conv-layout", "nan", "inf"])
def test_blockwise_diff_agrees_with_the_whole_tensor_formula(make):
    a, special = make(np.random.default_rng(0))
    b = np.ascontiguousarray(a) * (1 + 1e-9 * np.random.default_rng(1).standard_normal(a.shape))
    if special is not None:
        b.reshape(-1)[::997] = special
        a = a.copy()
        a.reshape(-1)[::1994] = special
    both = np.isfinite(a) & np.isfinite(b)
    agree = both | (np.isnan(a) & np.isnan(b)) | (~np.isfinite(a) & ~np.isfinite(b) & (a == b))
    with np.errstate(invalid="ignore"):
        err = np.abs(np.where(both, a - b, 0.0))
    ref = np.where(both, b, 0.0)
    rel = err / (np.abs(ref) + np.sqrt(np.mean(ref * ref)))
    d = diff("x", a, b, 1e-10)
    assert d.max_abs == pytest.approx(err.max()) and d.nonfinite_mismatch == np.count_nonzero(~agree)
    assert d.mismatch_fraction == pytest.approx(np.count_nonzero((rel > 1e-10) | ~agree) / a.size)
    if special is None:
        assert d.max_rel == pytest.approx(rel.max()) and d.rel_l2 == pytest.approx(np.linalg.norm(err) / np.linalg.norm(ref))


@pytest.mark.slow  # a minute: some twenty fresh processes, each importing torch
def test_benchmark_command_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(FIXTURES.parent / "benchmarks" / "run.py"), "--quick", "--models", "mlp,gpt2-small"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for heading in ("capture s", "np.save GB/s", "compare GB/s", "run s", "as the layers grow 10x", "--stats-only"):
        assert heading in proc.stdout
    assert list(tmp_path.iterdir()) == []  # nothing left behind
