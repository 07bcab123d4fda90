"""Sharded runs under torchrun (two CPU processes, gloo): each rank records its own dump, and compare puts the shards
back together against a single-process reference, naming the layer and the classic bug."""

import json
import subprocess
import sys

import pytest

from conftest import FIXTURES

DISTRIBUTED = FIXTURES / "distributed"


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """Both fixture scripts, each launched once on two ranks: their correct and buggy runs' rank dumps."""
    out = tmp_path_factory.mktemp("ranks")
    for script in ("ddp_train.py", "tp_train.py"):
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(DISTRIBUTED / script), str(out)],
            capture_output=True, text=True, cwd=DISTRIBUTED, timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return out


def compare(cli, dumps, name, reference):
    code, out, err = cli("compare", str(dumps / f"{name}.rank*.h5"), DISTRIBUTED / reference, "--json")
    assert code in (0, 1), err
    return code, json.loads(out)


def test_each_rank_writes_its_dump_with_its_rank_and_the_placements(dumps):
    from layerdiff import store

    with store.Dump(dumps / "tp.rank1.h5") as d:
        assert (d.info.rank, d.info.world_size) == (1, 2)
        assert d.param("fc1.weight").placement == "shard(0)" and d.param("fc1.weight").value.shape == (8, 6)
    with store.Dump(dumps / "ddp.rank0.h5") as d:
        assert d.param("0.weight").placement == "replicate"
        assert d.placements(0)["output"] == "shard(0)" and d.layers[0].tensors["input"].shape == (4, 6)


@pytest.mark.parametrize("name,reference", [("ddp", "ddp_ref.py"), ("tp", "tp_ref.py")])
def test_a_correct_sharded_run_matches_its_single_process_reference(cli, dumps, name, reference):
    code, report = compare(cli, dumps, name, reference)
    assert code == 0 and report["match"], report["culprits"]
    assert report["culprits"] == []


def test_ddp_gradients_summed_not_averaged_are_named_at_every_parameter_with_the_world_size(cli, dumps):
    code, report = compare(cli, dumps, "ddp-summed", "ddp_ref.py")
    assert code == 1
    # One culprit per layer and pass: the first parameter of each layer whose gradient is wrong stands for its layer.
    named = {(c["layer_a"], c["tensor"]) for c in report["culprits"]}
    assert named == {("0", "grad of 0.weight"), ("2", "grad of 2.weight")}
    assert all(c["pass"] == "param_grad" and "the world size" in c["hint"] for c in report["culprits"])
    assert report["forward"]["first_divergence"] is None


def test_a_row_parallel_layer_without_its_all_reduce_is_named_at_that_layer(cli, dumps):
    code, report = compare(cli, dumps, "tp-no-all-reduce", "tp_ref.py")
    assert code == 1
    assert [(c["layer_a"], c["pass"]) for c in report["culprits"]] == [("fc2", "forward")]
    assert "an all-reduce is missing" in report["culprits"][0]["hint"]
    assert any("backward pass is not judged" in line for line in report["structure"])


def test_a_rank_missing_from_the_set_is_refused(cli, dumps, tmp_path):
    import shutil

    shutil.copy(dumps / "tp.rank1.h5", tmp_path / "tp.rank1.h5")
    code, _, err = cli("compare", str(tmp_path / "tp.rank*.h5"), DISTRIBUTED / "tp_ref.py")
    assert code == 2 and "are not the dumps of every rank of one run (ranks [1]" in err
