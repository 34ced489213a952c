"""benchmarks/gpu_check.py on a CPU machine: everything before the first CUDA call (inputs, the
composed and validated spec, the project laid out) runs, and it then stops saying why."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks/gpu_check.py"
MODEL = Path(sys.prefix) / "share/slmake/models/smollm2-135m"
DATA = ROOT.parent / "shared/datasets/banking77/train.csv"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (MODEL.is_dir() and DATA.is_file()), reason="SmolLM2 or BANKING77 missing")]


def _run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_plan_composes_the_qlora_cuda_spec_and_stops_before_cuda(tmp_path):
    work = tmp_path / "work"
    res = _run("--plan", "--steps", "40", "--keep", str(work))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "train qlora (nf4) 40 steps, targets ['cuda']" in res.stdout
    assert "stopping before the first CUDA call: --plan" in res.stdout
    if importlib.util.find_spec("vllm") is None:   # the deploy package's vLLM recipe: said plainly why not
        assert "vLLM recipe step: skipped: vllm is not installed (the recipe targets vllm==" in res.stdout
    spec = yaml.safe_load((work / "params.yaml").read_text())
    assert spec["train"]["max_steps"] == 40 and spec["data"]["name"] == "banking77"
    assert Path(spec["model"]["hf"]["path"]) == MODEL.resolve()


def test_without_a_device_a_real_run_exits_2_naming_why(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the real run is the check")
    res = _run("--steps", "40")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "stopping before the first CUDA call: torch" in res.stdout and "no CUDA device" in res.stdout


def test_missing_input_is_named(tmp_path):
    res = _run("--plan", "--data", str(tmp_path / "nope.csv"))
    assert res.returncode == 1 and f"--data {tmp_path / 'nope.csv'} does not exist" in res.stderr
