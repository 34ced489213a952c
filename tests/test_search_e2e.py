"""`slmake search` end to end on the micro build (issue 19 items 1, 3): a 2x2 grid (train.lr x
targets.cpu.gguf.quants; 10 training steps, 8 evaluated and benched rows per split, GGUF only) whose
four trials are real `dvc exp run`s; the objective is the validation figure, the quant-only trial
restores training from the run cache, the Pareto table and the pick are written, and the printed
`dvc exp apply` brings the pick's spec into the workspace; a trial the wall-time budget stops leaves
the project clean."""

import json
import re
import shutil
import time

import pytest
import yaml

from e2e_utils import sh

pytestmark = pytest.mark.e2e
GIT = "git -c user.email=t@t -c user.name=t"
GRID = """# @package _global_
hydra:
  sweeper:
    params:
      train.lr: 0.004,0.008
      targets.cpu.gguf.quants: "[q8_0],[q4_k_m]"
      train.max_steps: 10
      targets.cpu.onnx_genai.precisions: "[]"
      eval.limit: 8
      bench.limit: 8
"""


@pytest.fixture(scope="module")
def repo(micro_repo, tmp_path_factory):
    """A copy of the shared micro build (left untouched), at its last commit, with the grid committed."""
    repo = tmp_path_factory.mktemp("search") / "micro"
    shutil.copytree(micro_repo, repo, symlinks=True)
    # other tests may leave the shared build's workspace ahead of its commit (an applied experiment)
    sh("git checkout -q -- . && git clean -fdq && dvc checkout -q", repo)
    (repo / "conf/search").mkdir(exist_ok=True)
    (repo / "conf/search/grid.yaml").write_text(GRID)
    sh(f"git add conf/search/grid.yaml && {GIT} commit -qm 'search grid'", repo)
    return repo


def test_grid_search_runs_experiments_and_picks_on_validation(repo):
    res = sh("slmake search grid", repo)
    out = res.stdout
    records = [json.loads(ln) for ln in (repo / ".slmake/search/grid/trials.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok"] * 4, [(r["status"], r.get("reason")) for r in records]
    names = {r["experiment"] for r in records}
    listed = sh("dvc exp list --name-only", repo).stdout.split()
    assert names <= set(listed), listed  # every trial is an ordinary experiment

    by = {tuple(r["overrides"][:2]): r for r in records}
    for r in records:  # unchanged stages come from the run cache: a quant-only trial never retrains
        if "targets.cpu.gguf.quants=[q4_k_m]" in r["overrides"]:
            twin = by[(r["overrides"][0], "targets.cpu.gguf.quants=[q8_0]")]
            assert "train" in twin["stages_run"] and "train" not in r["stages_run"], (twin, r)
            assert "compile@cpu" in r["stages_run"]
        # the objective is the validation figure of the experiment's own bench file, never the test one
        bench = json.loads(sh(f"git show {r['commit']}:reports/bench/cpu.json", repo).stdout)["cpu"]
        assert r["values"]["val_exact_match"] == bench[r["best"]]["val_exact_match"]
        assert set(bench) == {r["best"]}  # one GGUF per trial, no ONNX (the fixed params applied)

    md = (repo / "reports/search/grid.md").read_text()
    assert md.count("← pick") == 1 and "★" in md
    rows = (repo / "reports/search/grid.csv").read_text().splitlines()
    assert len(rows) == 5 and sum(ln.endswith(",True") for ln in rows) == 1
    plots = sh("dvc plots show --json reports/search/dvc.yaml", repo).stdout
    assert "search_grid_accuracy_vs_size" in plots

    pick = re.search(r"Apply it: `dvc exp apply (grid-\d+)`", out).group(1)
    chosen = next(r for r in records if r["experiment"] == pick)
    assert out.count("scored once, after the pick") == 1
    sh(f"dvc exp apply {pick}", repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    lr = float(chosen["overrides"][0].split("=")[1])
    quant = chosen["overrides"][1].split("=")[1].strip("[]")
    assert params["train"]["lr"] == lr and params["targets"]["cpu"]["gguf"]["quants"] == [quant]
    assert params["train"]["max_steps"] == 10


def test_a_failed_or_stopped_trial_leaves_the_project_clean(repo):
    """Issue 19 item 6 on real `dvc exp run --temp`s: a grid point the spec check refuses is a failed
    trial whose reason names the key; --timeout's kill, wherever it lands (training 100k steps here),
    leaves no experiment, no temporary workspace, no process, DVC's lock free and the workspace as
    it was."""
    import psutil
    from dvc.repo import Repo

    from slmake.search import launch
    from slmake.search.trial import TrialRunner, exp_run

    before = sh("git status --porcelain", repo).stdout
    head = sh("git rev-parse HEAD", repo).stdout.strip()
    bad = TrialRunner(repo=repo, search="bad", baseline=head, state=repo / ".slmake/search/bad").run(0, ["train.lr=-1"])
    assert bad["status"] == "failed" and "train.lr" in bad["reason"] and "check" in bad["reason"], bad
    t0 = time.time()
    code, out = exp_run(repo, "stopped", ["train.lr=0.0031", "train.max_steps=100000"], repo / ".slmake/stopped.log",
                        deadline=t0 + 8)
    assert code == launch.TIMEOUT and "ERROR: timeout" in out, out[-2000:]
    assert time.time() - t0 < 8 + 5, out[-2000:]  # SIGINT was enough: DVC cleaned up and exited
    assert "stopped" not in sh("dvc exp list --name-only", repo).stdout.split()
    assert not list((repo / ".dvc/tmp/exps").glob("*/tmp*"))  # its temporary copy of the workspace is gone
    assert not [p.info for p in psutil.process_iter(["cwd", "cmdline"]) if str(repo) in str(p.info["cwd"])]
    with Repo(str(repo)) as r, r.lock:  # the repository lock is free: the next trial can run
        pass
    assert sh("git status --porcelain", repo).stdout == before
