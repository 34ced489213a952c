"""Resume (issue 11.6): a train stage SIGKILLed after its first checkpoint resumes from it on the
next `dvc repro` (the check stage's litter sweep leaves the checkpoint alone) and ends with the
bytes of an uninterrupted run; checkpoints are removed once the stage succeeded."""

import copy
import json
import os
import signal
import subprocess
import time

import pytest

from e2e_utils import MICRO, make_project, merge, micro_tickets, sh
from slmake import checkpoints
from slmake.io import sha256_tree

pytestmark = pytest.mark.e2e

# MICRO, smaller: a 1-layer model, a short pretraining, 40 LoRA steps checkpointed every 10.
SPEC = copy.deepcopy(MICRO)
merge(SPEC, {
    "model": {"scratch": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 1, "pretrain": {"steps": 30}}},
    "train": {"max_steps": 40, "save_steps": 10, "threads": 1},
})


def _markers(repo):
    return sorted((repo / checkpoints.ROOT).glob(f"*/checkpoint-*/{checkpoints.COMPLETE}"))


def test_killed_train_resumes_to_the_bytes_of_an_uninterrupted_run(tmp_path):
    repo = tmp_path / "p"
    micro_tickets(repo, 400)
    make_project(repo, SPEC)
    sh("dvc repro base", repo)

    # the first train run ever, killed (DVC, the stage and all) once a checkpoint is complete
    run = subprocess.Popen(["dvc", "repro", "train"], cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    end = time.monotonic() + 300
    while not _markers(repo) and run.poll() is None and time.monotonic() < end:
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, "train ended before it could be killed"
    assert not (repo / "build/train").exists()
    killed_at = max(int(m.parent.name.split("-")[1]) for m in _markers(repo))
    assert killed_at < 40

    # the next `dvc repro train`: check (sweeps killed writers' litter) then train, resumed
    out = sh("dvc repro train", repo).stdout
    assert "train: resuming from build/.checkpoints/train/" in out, out[-2000:]
    resumed = json.loads((repo / "reports/train/summary.json").read_text())
    assert resumed["resumed_from_step"] >= killed_at and resumed["steps"] == 40
    assert not (repo / checkpoints.ROOT).exists()  # removed after the stage succeeded
    assert not list((repo / "build").glob(".train.*"))
    resumed_bytes = sha256_tree(repo / "build/train")
    curve = (repo / "reports/train/plots/metrics/train/loss.tsv").read_text()

    # an uninterrupted run of the same inputs
    out = sh("dvc repro -f -s train", repo).stdout
    assert "resuming" not in out
    fresh = json.loads((repo / "reports/train/summary.json").read_text())
    assert fresh["resumed_from_step"] == 0
    assert sha256_tree(repo / "build/train") == resumed_bytes
    # the resumed run's dvclive curve and summary (train loss included) are those of the uninterrupted run
    assert (repo / "reports/train/plots/metrics/train/loss.tsv").read_text() == curve
    assert {k: v for k, v in resumed.items() if k != "resumed_from_step"} == \
        {k: v for k, v in fresh.items() if k != "resumed_from_step"}


def test_checkpoints_survive_the_litter_sweep_and_only_complete_ones_resume(tmp_path):
    """The check stage's sweep keeps checkpoints; a half-written one (no marker, or a rank's RNG
    state missing) is never resumed and is removed."""
    from slmake.io import sweep_litter

    folder = tmp_path / "build/.checkpoints/train/abc"
    for step, files in ((10, ["trainer_state.json", "rng_state.pth", checkpoints.COMPLETE]),
                        (20, ["trainer_state.json", "rng_state.pth"]),          # killed before the marker
                        (30, ["model.safetensors"])):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        for f in files:
            (folder / f"checkpoint-{step}" / f).write_text(json.dumps({"world_size": 1, "total_loss": 1.0}))
    assert sweep_litter(tmp_path / "build") == []
    assert [p.name for p in checkpoints.complete_checkpoints(folder)] == ["checkpoint-10"]
    assert checkpoints.complete_checkpoints(folder, world_size=2) == []  # other process count: rng_state_{0,1}
    assert [p.name for p in checkpoints.prune_incomplete(folder)] == ["checkpoint-20", "checkpoint-30"]
    assert [p.name for p in folder.iterdir()] == ["checkpoint-10"]


def test_checkpoint_key_changes_with_every_input(tmp_path):
    """A checkpoint of other inputs (spec, seed, process count, threads, base or data bytes) is never resumed."""
    base, splits = tmp_path / "base", tmp_path / "data"
    base.mkdir()
    splits.mkdir()
    (base / "model.safetensors").write_text("w")
    (splits / "train.jsonl").write_text("{}\n")
    cfg = {"method": "full", "lr": 1e-4, "save_steps": 10}
    ref = checkpoints.key(cfg, 0, base, splits, 1, 1)
    assert checkpoints.key(dict(cfg), 0, base, splits, 1, 1) == ref
    others = [checkpoints.key({**cfg, "lr": 2e-4}, 0, base, splits, 1, 1), checkpoints.key(cfg, 1, base, splits, 1, 1),
              checkpoints.key(cfg, 0, base, splits, 2, 1), checkpoints.key(cfg, 0, base, splits, 1, 2)]
    (base / "model.safetensors").write_text("w2")
    others.append(checkpoints.key(cfg, 0, base, splits, 1, 1))
    (splits / "val.jsonl").write_text("{}\n")
    others.append(checkpoints.key(cfg, 0, base, splits, 1, 1))
    assert len({ref, *others}) == 7
