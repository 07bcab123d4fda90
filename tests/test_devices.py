"""Where a PyTorch side lives: it runs on its model's device (inputs, forced values and upstream gradients moved
there, values copied back for the dump), the dump records the device, and the report names a device other than
the CPU. The CUDA test runs where a GPU is present and is skipped, saying so, elsewhere."""

import pytest
import torch

import layerdiff
from layerdiff.records import RunInfo
from layerdiff.report import side

from conftest import FIXTURES

CUDA = torch.cuda.is_available()


def test_a_cpu_side_records_its_device_and_the_header_leaves_it_out(tmp_path):
    result = layerdiff.run(FIXTURES / "mlp_numpy.py", FIXTURES / "mlp_torch.py", out=tmp_path)
    assert result.match
    assert result.comparison.info_b.settings["device"] == "cpu"
    assert ", on " not in str(result).splitlines()[1]


def test_the_header_names_a_side_on_another_device():
    info = RunInfo(framework="torch", framework_version="2.13.0", compute_dtype="float32", settings={"device": "cuda:0"})
    assert side(info) == "torch 2.13.0, float32, on cuda:0"


@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine: the CUDA side runs where a GPU is present")
def test_a_cuda_side_is_run_on_its_device_and_agrees_with_numpy(tmp_path):
    cuda_file = tmp_path / "mlp_cuda.py"
    cuda_file.write_text(f"import sys\nsys.path.insert(0, {str(FIXTURES)!r})\nfrom mlp_torch import *\nmodel = model.to('cuda')\n")
    result = layerdiff.run(FIXTURES / "mlp_numpy.py", cuda_file, out=tmp_path / "out")
    assert result.match, str(result)
    assert result.comparison.info_b.settings["device"].startswith("cuda")
    assert ", on cuda" in str(result).splitlines()[1]
    bug = layerdiff.run(FIXTURES / "bug_sigmoid_grad_preactivation.py", cuda_file, out=tmp_path / "bug")
    assert [c.layer_a for c in bug.comparison.culprits or []] == ["sig2"], str(bug)
