"""Compile one target: build its artifacts atomically and write a manifest for each.

A manifest records what went in (sha256 of the merged model, the target's spec slice), what came
out (sha256 + size of the artifact) and with what (toolchain versions), so an artifact found on a
deployment box can be traced back to the exact build.
"""

from __future__ import annotations

import platform
from pathlib import Path

from . import __version__, targets
from .io import atomic_dir, sha256_tree, size_bytes, write_json_atomic
from .toolchain import versions

MANIFEST_GLOB = "manifest.*.json"


def compile_target(name: str, settings: dict, merged_dir: Path, out_root: Path) -> list[dict]:
    module = targets.load(name)
    info = module.TARGET
    merged_dir, out_root = merged_dir.resolve(), out_root.resolve()  # toolchains may run in another cwd
    inputs_sha = sha256_tree(merged_dir)
    out_dir = out_root / name
    with atomic_dir(out_dir) as tmp:
        artifacts = module.compile(merged_dir, tmp, settings)
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
                manifest_dir = path if path.is_dir() else path.parent
                write_json_atomic(manifest_dir / f"manifest.{art.name}.json", manifest)
            entries.append(entry)
        write_json_atomic(tmp / "artifacts.json", {"target": name, "artifacts": entries,
                                                   "inputs": {"merged_model_sha256": inputs_sha}})
    return entries
