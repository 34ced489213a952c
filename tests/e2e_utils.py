"""Build a throw-away slmake project (a git repo with conf/, stages/, dvc.yaml) for end-to-end tests."""

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def sh(cmd, cwd, check=True):
    res = subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"`{cmd}` failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def merge(into: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v


def make_project(repo: Path, spec: dict, defaults: dict | None = None) -> Path:
    """Copy the project into ``repo``, fold ``spec`` into conf/config.yaml (its keys override the
    groups: _self_ comes last), pick group options from ``defaults``, compose params.yaml, commit."""
    for item in ("conf", "stages", "src", "dvc.yaml", ".gitignore", ".dvc/config"):
        src, dst = ROOT / item, repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    config = yaml.safe_load((repo / "conf/config.yaml").read_text())
    for group, option in (defaults or {}).items():
        config["defaults"] = [{group: option} if isinstance(d, dict) and group in d else d for d in config["defaults"]]
    merge(config, spec)
    (repo / "conf/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    sh("slmake check --write params.yaml", repo)
    sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", repo)
    return repo
