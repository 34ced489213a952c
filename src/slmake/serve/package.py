"""Find a deploy package by name (``cpu/gguf_q4_k_m``) or folder, or pick the default one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEPLOY_ROOT = Path("build/deploy")


class PackageError(Exception):
    """No usable package; the message says which were looked for and what exists."""


@dataclass
class Package:
    folder: Path
    contract: dict            # serve.json, written by the deploy stage

    @property
    def name(self) -> str:
        return self.contract["name"]


def available(root: Path = DEPLOY_ROOT) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/*/serve.json"))


def resolve(name: str | None, root: Path = DEPLOY_ROOT) -> Package:
    """``name``: a package folder, ``<target>/<artifact>``, or None for the best-accuracy CPU
    artifact (ties: the smaller one)."""
    if name is None:
        cpu = [load(p) for p in available(root) if p.parent.name == "cpu"]
        cpu = [p for p in cpu if p.contract["figures"].get("exact_match") is not None]
        if not cpu:
            raise PackageError(f"no benchmarked cpu package under {root}/cpu; run `dvc repro` first, "
                               f"or name one of: {_names(root)}")
        return max(cpu, key=lambda p: (p.contract["figures"]["exact_match"], -p.contract["figures"].get("size_mb", 0)))
    folder = Path(name)
    if not (folder / "serve.json").is_file():
        folder = root / name
    if not (folder / "serve.json").is_file():
        raise PackageError(f"{name!r} is not a deploy package (no serve.json in {name} or {root / name}); "
                           f"available: {_names(root)}")
    return load(folder)


def load(folder: Path) -> Package:
    try:
        contract = json.loads((folder / "serve.json").read_text())
    except (OSError, ValueError) as e:
        raise PackageError(f"{folder / 'serve.json'}: unreadable ({e})") from None
    return Package(folder, contract)


def _names(root: Path) -> str:
    names = [f"{p.parent.name}/{p.name}" for p in available(root)]
    return ", ".join(names) or "none (run `dvc repro`)"
