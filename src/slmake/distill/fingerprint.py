"""What the check stage hashes for distillation (dvc.yaml cannot list paths that come from params):

* build/check.distill.json <- `stage_inputs`: the inputs, the labelled set and the teacher's files;
  the distill stage depends on it, so a changed input or teacher relabels. Off: a constant.
* build/check.data.json gets `review`: the reviewed CSV's hash (curate depends on that file),
  so filling in the review reruns curate -- and only curate. Off: nothing is added.
"""

from __future__ import annotations

from pathlib import Path

from ..data.sources import fingerprint as source_hashes
from ..io import sha256_file
from . import DistillError


def stage_inputs(cfg: dict, cache=None) -> dict:
    """Content hashes of everything the distill stage reads besides its params (raises CurationError,
    ModelFileError or DistillError naming the key)."""
    if not cfg["enabled"]:
        return {"enabled": False}

    t = cfg["teacher"]
    out = {"enabled": True,
           "inputs": source_hashes(cfg["inputs"]["path"], cfg["inputs"]["format"], cache)["sources"],
           "labelled": source_hashes(cfg["labelled"], "auto", cache)["sources"]}
    if t["kind"] == "openai":
        out["teacher"] = {"url": t["url"], "model": t["model"]}
        return out
    path = Path(t["path"] or "")
    if not path.exists():
        raise DistillError(f"distill.teacher.path: {path} not found")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                 and not any(s.startswith(".") for s in p.relative_to(path).parts))
    digest = (lambda f: cache.get(f, "sha256", sha256_file)) if cache is not None else sha256_file
    out["teacher"] = {(f.name if f == path else f.relative_to(path).as_posix()): digest(f) for f in files}
    return out


def review(cfg: dict) -> dict | None:
    """The reviewed file's hash, or None when distillation is off (the default build's hashes stay)."""
    if not cfg["enabled"]:
        return None
    path = Path(cfg["review"]["path"])
    return {"path": path.as_posix(), "sha256": sha256_file(path) if path.is_file() else None}
