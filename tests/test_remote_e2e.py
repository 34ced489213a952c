"""Past one machine: a second machine gets every artifact of a build with `dvc pull` instead of
rebuilding it, and an experiment travels with `dvc exp push/pull` (git refs to a git remote, its
artifacts to the DVC remote). Local-path remotes stand in for S3/SSH (docs/guide/sweeps.md)."""

import shutil
import time

import pytest
import yaml

from e2e_utils import ran_stages, sh

pytestmark = pytest.mark.e2e
GIT = "git -c user.email=t@t -c user.name=t"


def _only_check_changed(status: str) -> bool:
    """`dvc status` of an up-to-date build: the check stage validates the spec on every repro."""
    lines = [ln.strip() for ln in status.splitlines() if ln.strip()]
    return lines in ([], ["check:", "always changed"], ["Data and pipelines are up to date."])


@pytest.fixture(scope="module")
def origin(micro_repo, tmp_path_factory):
    """A copy of the shared micro build (left untouched) with a local DVC remote, pushed."""
    root = tmp_path_factory.mktemp("remote")
    repo = root / "origin"
    shutil.copytree(micro_repo, repo, symlinks=True)
    # other tests leave the shared build's workspace ahead of its last commit (an applied experiment,
    # a request log under logs/): bring it up to date and commit it, so a clone is that build
    for f in (repo / "logs").iterdir():
        if f.name != ".gitkeep":
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    sh(f"dvc repro -q && dvc remote add -d store {root / 'store'} && git add -A && {GIT} commit -qm built", repo)
    t0 = time.perf_counter()
    sh("dvc push -q", repo)
    print(f"\ndvc push (micro build, local remote): {time.perf_counter() - t0:.1f} s")
    return repo


def test_fresh_clone_pulls_every_artifact_and_rebuilds_nothing(origin):
    clone = origin.parent / "clone"
    sh(f"git clone -q {origin} {clone}", origin.parent)
    assert not (clone / "build").exists()
    t0 = time.perf_counter()
    sh("dvc pull -q", clone)
    pull_s = time.perf_counter() - t0
    built = origin / "first_repro.seconds"
    rebuild = f"{float(built.read_text()):.1f} s" if built.exists() else "n/a"
    print(f"\nfresh clone: `dvc pull` {pull_s:.1f} s vs the build it replaces ({rebuild}, `dvc repro` of the micro spec)")
    assert _only_check_changed(sh("dvc status", clone).stdout)
    res = sh("dvc repro", clone)
    assert ran_stages(res.stdout) == set(), res.stdout  # every artifact came from the remote
    assert sh("git status --porcelain", clone).stdout == ""  # dvc.lock and the reports unchanged
    for out in ("build/train/merged/model.safetensors", "build/deploy/cpu", "build/bench/cpu/outputs.jsonl"):
        assert (clone / out).exists(), out


def test_experiment_travels_with_exp_push_and_pull(origin):
    root = origin.parent
    sh(f"git init -q --bare {root / 'git.git'}", root)
    sh(f"git remote add hub {root / 'git.git'} && git push -q hub HEAD:refs/heads/main", origin)
    # a spec edit whose new artifacts are cached outputs (deploy's packages carry the data name)
    # and that trains nothing: curate's splits do not change
    res = sh("dvc exp run -n renamed -S data.name=it_tickets_v2", origin)
    # nothing is trained, evaluated or compiled again (bench may rerun: its timings are not cached
    # by content when the session's other tests touched the shared build)
    assert not ran_stages(res.stdout) & {"base", "train", "evaluate", "compile@cpu"}, res.stdout
    assert "deploy@cpu" in ran_stages(res.stdout)
    sh("dvc exp push hub renamed", origin)  # the git ref to `hub`, its artifacts to the DVC remote

    other = root / "other"
    sh(f"git clone -q -b main {root / 'git.git'} {other}", root)
    sh("dvc exp pull origin renamed", other)
    assert "renamed" in sh("dvc exp list --all-commits --name-only", other).stdout
    sh("dvc exp apply renamed && dvc checkout -q", other)  # the packages come from the DVC remote
    assert yaml.safe_load((other / "params.yaml").read_text())["data"]["name"] == "it_tickets_v2"
    assert _only_check_changed(sh("dvc status", other).stdout)
    assert ran_stages(sh("dvc repro", other).stdout) == set()
    contracts = list((other / "build/deploy/cpu").glob("*/serve.json"))
    assert contracts and all(yaml.safe_load(c.read_text())["data"] == "it_tickets_v2" for c in contracts)
