"""Data-parallel training (issue 11.7): the train stage with train.processes=2 (two CPU processes,
gloo, relaunched under torchrun by the stage itself) follows the single-process loss curve at the
same global batch (1 x 8 vs 2 x 4), and only rank 0 writes outputs.

Tolerance: within an epoch the two runs see the same samples at every step (accelerate shards each
global batch of the same seeded permutation) and the loss is averaged over the tokens of the whole
global batch (average_tokens_across_devices), so they differ only in float summation order (each
rank's half-batch sum, then gloo's all-reduce): ~1e-7 relative per step, compounded by 40 AdamW
steps. We allow 1e-3 relative on every logged train loss (one step of a different batch moves it by
>1e-2), inside the first epoch: an epoch's last, partial batch is padded differently across ranks.
The val loss gets 2e-2: evaluation averages per-batch means, and the batches are 8 rows vs 4 per rank.
Measured (2 cores): loss 1.1e-7 relative at step 10, equal at 20-40; val 2.7e-4; weights 3.7e-8.
"""

import copy
import json
import math
import re
import shutil

import pytest
from safetensors.torch import load_file

from e2e_utils import MICRO, make_project, merge, micro_tickets, sh

pytestmark = pytest.mark.e2e

SPEC = copy.deepcopy(MICRO)
merge(SPEC, {
    "model": {"scratch": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 1, "pretrain": {"steps": 30}}},
    "train": {"max_steps": 40, "save_steps": 0, "threads": 1, "batch_size": 8, "processes": 1},
})
RTOL = 1e-3


def _curve(repo):
    rows = (repo / "reports/train/plots/metrics/train/loss.tsv").read_text().split("\n")[1:]
    return [(int(s), float(v)) for s, v in (r.split("\t") for r in rows if r)]


def test_two_gloo_processes_follow_the_single_process_curve(tmp_path):
    repo = tmp_path / "p"
    micro_tickets(repo, 700)  # > 40 steps x 8 rows
    make_project(repo, SPEC)
    sh("dvc repro base", repo)

    first = sh("PYTHONHASHSEED=0 python -X importtime stages/train.py", repo)
    # a LoRA run never loads bitsandbytes (QLoRA's library; 2.4 s of imports): stages/train.py keeps it out
    # (-X importtime lists the refused attempt too, in microseconds; a real import loads its submodules)
    assert not re.search(r"\|\s+bitsandbytes\.", first.stderr), first.stderr[-2000:]
    assert re.search(r"\|\s+peft\b", first.stderr), first.stderr[-2000:]
    shutil.copytree(repo / "build/train/merged", tmp_path / "one")
    one, one_sum = _curve(repo), json.loads((repo / "reports/train/summary.json").read_text())

    sh("slmake check --write params.yaml train.processes=2 train.batch_size=4", repo)
    out = sh("PYTHONHASHSEED=0 python stages/train.py", repo)
    two, two_sum = _curve(repo), json.loads((repo / "reports/train/summary.json").read_text())
    assert out.stdout.count("train: {") == 1  # rank 0 alone reports (and writes)

    assert [s for s, _ in one] == [s for s, _ in two] == [10, 20, 30, 40]
    assert all(math.isfinite(v) for _, v in one + two)
    for (_, a), (_, b) in zip(one, two):
        assert b == pytest.approx(a, rel=RTOL)
    assert two_sum["steps"] == one_sum["steps"] == 40
    assert two_sum["val_loss"] == pytest.approx(one_sum["val_loss"], rel=2e-2)
    w1, w2 = (load_file(p / "model.safetensors") for p in (tmp_path / "one", repo / "build/train/merged"))
    gap = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    print(f"\nDDP 1 x 8 vs 2 x 4: loss {one} vs {two}; val {one_sum['val_loss']} vs {two_sum['val_loss']}; "
          f"max |weight gap| {gap:.2e}")


def test_a_launcher_with_another_process_count_is_refused(tmp_path):
    """torchrun's world size decides the global batch, so it must be the spec's train.processes."""
    repo = tmp_path / "p"
    micro_tickets(repo, 50)
    make_project(repo, SPEC)
    res = sh("PYTHONHASHSEED=0 python -m torch.distributed.run --standalone --nproc_per_node=2 stages/train.py",
             repo, check=False)
    assert res.returncode != 0
    assert "launched with 2 processes but train.processes is 1" in res.stderr
