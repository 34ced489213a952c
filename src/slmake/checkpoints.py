"""Training checkpoints that outlive a killed `dvc repro`.

DVC deletes a stage's outputs before it reruns the stage, so checkpoints live outside them, in
build/.checkpoints/train/<key>. The key hashes everything that decides the trained bytes (the
train spec, seed, process count, torch threads, the base model's and the splits' content, the
training code and library versions): a checkpoint of other inputs is never resumed. A checkpoint
counts only once the Trainer wrote all of it (the COMPLETE marker, written last, and every
rank's RNG state); a half-written one is removed before resuming.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib.metadata import version
from pathlib import Path

from .io import sha256_tree

ROOT = Path("build/.checkpoints/train")
COMPLETE = "slmake_complete.json"


def key(cfg: dict, seed: int, base_dir: Path, splits: Path, world_size: int, threads: int) -> str:
    parts = {
        "train": cfg, "seed": seed, "world_size": world_size, "threads": threads,
        "base": sha256_tree(base_dir),
        "splits": {n: sha256_tree(splits / n) for n in ("train.jsonl", "val.jsonl") if (splits / n).exists()},
        "code": sha256_tree(Path(__file__).with_name("train.py")),
        "versions": [version(m) for m in ("torch", "transformers", "trl", "peft", "accelerate", "datasets")],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _step(p: Path) -> int:
    try:
        return int(p.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("checkpoint-*") if p.is_dir() and _step(p) >= 0), key=_step)


def _complete(p: Path, world_size: int) -> bool:
    if not (p / COMPLETE).is_file() or not (p / "trainer_state.json").is_file():
        return False
    try:
        if json.loads((p / COMPLETE).read_text()).get("world_size") != world_size:
            return False
    except ValueError:
        return False
    if world_size == 1:
        return (p / "rng_state.pth").is_file()
    return all((p / f"rng_state_{i}.pth").is_file() for i in range(world_size))


def complete_checkpoints(folder: Path, world_size: int = 1) -> list[Path]:
    """The resumable checkpoints in ``folder``, oldest first."""
    return [p for p in _checkpoints(folder) if _complete(p, world_size)]


def prune_incomplete(folder: Path, world_size: int = 1) -> list[Path]:
    """Remove what a kill left half-written (a checkpoint without its marker)."""
    gone = [p for p in _checkpoints(folder) if not _complete(p, world_size)]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def remove(folder: Path) -> None:
    """After a successful stage: the checkpoints served their purpose (and are gigabytes for a
    real model); an emptied parent goes too."""
    shutil.rmtree(folder, ignore_errors=True)
    for parent in (folder.parent, folder.parent.parent):
        try:
            parent.rmdir()
        except OSError:
            break
