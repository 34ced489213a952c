"""Compile one target: validate its settings once, build its artifacts atomically, write a manifest
for each, and print one line per artifact (status, size, seconds).

A manifest records what went in (sha256 of the merged model, the target's spec slice), what came
out (sha256 + size of the artifact) and with what (toolchain versions), so an artifact found on a
deployment box can be traced back to the exact build. Toolchain logs go to ``logs_root/<target>``,
outside the cached output: they hold paths and timings, which would make the output's hash change
on every rebuild.
"""

from __future__ import annotations

import platform
import shutil
import time
from pathlib import Path

from jsonschema import Draft202012Validator

from . import __version__, targets
from .io import atomic_dir, sha256_tree, size_bytes, write_json_atomic
from .spec import explain, target_schema
from .targets.base import Artifact, BuildContext
from .toolchain import versions

MANIFEST_GLOB = "manifest.*.json"


def manifest_path(artifact_path: Path, name: str) -> Path:
    """Where an artifact's manifest lives: inside its folder, or beside its file."""
    folder = artifact_path if artifact_path.is_dir() else artifact_path.parent
    return folder / f"manifest.{name}.json"


class CompileError(Exception):
    """Settings that cannot build anything; the message names the key and what was expected."""


def settings_problems(name: str, settings: dict) -> list[str]:
    """Every problem with ``targets.<name>``: its schema (the one definition of enums, ranges and
    required keys) and then the target's own semantic checks."""
    module = targets.load(name)
    errors = sorted(explain(e, prefix=["targets", name])
                    for e in Draft202012Validator(target_schema(name)).iter_errors(settings))
    return errors or module.validate_settings(settings)


def compile_target(name: str, settings: dict, merged_dir: Path, data_dir: Path, out_root: Path,
                   logs_root: Path, base_dir: Path | None = None) -> list[dict]:
    module = targets.load(name)
    problems = settings_problems(name, settings)
    if problems:
        raise CompileError("\n".join(problems))
    info = module.TARGET
    merged_dir, out_root = merged_dir.resolve(), out_root.resolve()  # toolchains may run in another cwd
    logs = logs_root.resolve() / name
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    inputs_sha = sha256_tree(merged_dir)
    with atomic_dir(out_root / name) as tmp:
        clock = [time.perf_counter()]

        def done(art: Artifact) -> None:
            size = size_bytes(tmp / art.path) if art.status == "built" and (tmp / art.path).exists() else 0
            print(f"  {art.name:<18} {art.status:<6} {size / 2**20:8.2f} MiB {time.perf_counter() - clock[0]:6.1f} s"
                  + (f"  {art.reason}" if art.reason else ""), flush=True)
            clock[0] = time.perf_counter()

        base = base_dir.resolve() if base_dir is not None and (base_dir / "config.json").is_file() else None
        artifacts = module.compile(BuildContext(merged_dir, tmp, data_dir, logs, done, base), settings)
        entries = []
        for art in artifacts:
            entry = art.to_dict()
            if art.status == "built":
                path = tmp / art.path
                # several bench entries may share one folder (e.g. one IR run on NPU and on CPU):
                # each gets its own manifest, and manifests are not part of an artifact's hash
                entry["sha256"] = sha256_tree(path, exclude=MANIFEST_GLOB)
                entry["size_bytes"] = size_bytes(path, exclude=MANIFEST_GLOB)
                manifest = {
                    "artifact": entry,
                    "target": name,
                    "inputs": {"merged_model_sha256": inputs_sha},
                    "spec": {"targets": {name: settings}},
                    "toolchain": versions(("slmake",) + tuple(info.packages)),
                    "slmake_version": __version__,
                    "python": platform.python_version(),
                }
                write_json_atomic(manifest_path(path, art.name), manifest)
            entries.append(entry)
        write_json_atomic(tmp / "artifacts.json", {"target": name, "artifacts": entries,
                                                   "inputs": {"merged_model_sha256": inputs_sha}})
    if entries and not any(e["status"] == "built" for e in entries):
        print(f"WARNING: compile@{name} built none of its {len(entries)} artifacts (reasons above); "
              "bench will report them not_built", flush=True)
    return entries
