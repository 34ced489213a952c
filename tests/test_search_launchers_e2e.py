"""`slmake search` past one process (issue 19 item 5): hydra-submitit-launcher's local executor, and
slmake's Ray launcher on a local Ray instance, run two trials at once, each in its own clone of the
project (DVC's repository lock forbids two runs in one workspace). A trial clones from the git remote, pulls the build and the run cache from the DVC
remote, runs `dvc exp run`, and `dvc exp push`es; the driver `dvc exp pull`s them, so `dvc exp show`
lists both and the pick's artifacts are in its cache. Local-path remotes stand in for a cluster's
(as in tests/test_remote_e2e.py). The two trials share this machine's cores: each one's null thread
keys get half of them."""

import json
import re
import shutil

import pytest

from e2e_utils import sh
from slmake import process_setup as rt

pytestmark = pytest.mark.e2e
GIT = "git -c user.email=t@t -c user.name=t"


def grid(launcher: str) -> str:
    """The search file: two quant-only trials, two at once, on ``launcher``."""
    return f"""# @package _global_
defaults:
  - override /hydra/launcher: {launcher}
hydra:
  sweeper:
    params:
      targets.cpu.gguf.quants: "[q8_0],[q4_k_m]"
      targets.cpu.onnx_genai.precisions: "[]"
search:
  parallel: 2
"""


@pytest.fixture(scope="module")
def driver(micro_repo, tmp_path_factory):
    """A copy of the shared micro build (left untouched) with a bare git remote `origin` and a
    default DVC remote, the search file committed and pushed; nothing pushed to the DVC remote yet
    (the search does it)."""
    root = tmp_path_factory.mktemp("launch")
    repo = root / "driver"
    shutil.copytree(micro_repo, repo, symlinks=True)
    sh("git checkout -q -- . && git clean -fdq && dvc checkout -q", repo)  # the build as committed
    sh(f"git init -q --bare {root / 'hub.git'} && git remote add origin {root / 'hub.git'}", repo)
    sh(f"dvc remote add -d store {root / 'store'}", repo)
    (repo / "conf/search").mkdir(exist_ok=True)
    (repo / "conf/search/grid.yaml").write_text(grid("submitit_local"))
    sh(f"git add conf/search/grid.yaml .dvc/config && {GIT} commit -qm 'search grid, remotes'", repo)
    return repo


def test_submitit_local_trials_run_in_clones_and_reach_the_driver(driver):
    # the commit is not on the git remote yet: a clear error, nothing launched
    res = sh("slmake search grid", driver, check=False)
    assert res.returncode == 2 and "search.git_remote" in res.stderr and "git push origin HEAD" in res.stderr
    sh("git push -q origin HEAD:refs/heads/main", driver)

    res = sh("slmake search grid", driver)
    out = res.stdout
    assert "submitit_local launcher, 2 trial(s) at once" in out, out
    records = [json.loads(ln) for ln in (driver / ".slmake/search/grid/trials.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"], [(r["status"], r.get("reason")) for r in records]
    names = {r["experiment"] for r in records}
    # each trial ran in a clone and pushed; the driver pulled them: ordinary experiments of its commit
    assert names <= set(sh("dvc exp list --name-only", driver).stdout.split())
    shown = json.loads(sh("dvc exp show --json", driver).stdout)
    assert names <= {e.get("name") for row in shown for exps in row.get("experiments") or [] for e in exps["revs"]}

    share = 1 << (max(1, rt.cores() // 2).bit_length() - 1)  # two trials on this machine's cores
    for r in records:
        # the clone pulled the build: only what the quants change ran (no training in a trial)
        assert "compile@cpu" in r["stages_run"] and not {"base", "train", "evaluate"} & set(r["stages_run"]), r
        details = json.loads(sh(f"git show {r['commit']}:reports/bench/cpu.details.json", driver).stdout)["cpu"]
        assert details[r["best"]]["threads"] == share, details  # cores // 2: never oversubscribed
        bench = json.loads(sh(f"git show {r['commit']}:reports/bench/cpu.json", driver).stdout)["cpu"]
        assert r["values"]["val_exact_match"] == bench[r["best"]]["val_exact_match"] and set(bench) == {r["best"]}

    pick = re.search(r"Apply it: `dvc exp apply (grid-\d+)`", out).group(1)
    assert (driver / "reports/search/grid.md").read_text().count("← pick") == 1
    # the pick's outputs were pulled into the driver's cache: apply + checkout restores its artifact
    chosen = next(r for r in records if r["experiment"] == pick)
    sh(f"dvc exp apply {pick} && dvc checkout -q", driver)
    assert (driver / "build/compile/cpu" / chosen["best"]).exists()
    assert json.loads((driver / "reports/bench/cpu.json").read_text())["cpu"].keys() == {chosen["best"]}


def test_ray_local_trials_run_in_clones_and_reach_the_driver(driver):
    """hydra/launcher=slmake_ray: a local Ray instance (ray.init here) runs the two trials as Ray
    tasks at once, each in its own clone; their experiments reach the driver through the remotes."""
    pytest.importorskip("ray", reason="Ray is an optional extra: .venv/bin/pip install -r requirements/ray.txt "
                                      "-c requirements/constraints.txt")
    sh("git checkout -q -- . && dvc checkout -q", driver)  # the build as committed (the submitit test applied its pick)
    (driver / "conf/search/on_ray.yaml").write_text(grid("slmake_ray"))
    sh(f"git add conf/search/on_ray.yaml && {GIT} commit -qm 'search on ray' && git push -q origin HEAD:refs/heads/main",
       driver)
    res = sh("slmake search on_ray", driver)
    out = res.stdout + res.stderr
    assert "ray launcher, 2 trial(s) at once" in out and "Started a local Ray instance" in out, out[-3000:]
    assert re.search(r"\(_run_job pid=\d+\) \[slmake search\] trial 0", out), out[-3000:]  # in a Ray worker
    records = [json.loads(ln) for ln in (driver / ".slmake/search/on_ray/trials.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"], [(r["status"], r.get("reason")) for r in records]
    names = {r["experiment"] for r in records}
    assert names <= set(sh("dvc exp list --name-only", driver).stdout.split())  # pulled from the git remote
    share = 1 << (max(1, rt.cores() // 2).bit_length() - 1)
    for r in records:
        assert "compile@cpu" in r["stages_run"] and "train" not in r["stages_run"], r
        details = json.loads(sh(f"git show {r['commit']}:reports/bench/cpu.details.json", driver).stdout)["cpu"]
        assert details[r["best"]]["threads"] == share, details
    pick = re.search(r"Apply it: `dvc exp apply (on_ray-\d+)`", out).group(1)
    chosen = next(r for r in records if r["experiment"] == pick)
    sh(f"dvc exp apply {pick} && dvc checkout -q", driver)  # the pick's outputs are in the driver's cache
    assert (driver / "build/compile/cpu" / chosen["best"]).exists()
