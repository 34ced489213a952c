"""Find a deploy package by name (``cpu/gguf_q4_k_m``) or folder, or pick one (slmake.selection)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..selection import pick

DEPLOY_ROOT = Path("build/deploy")


class PackageError(Exception):
    """No usable package; the message says which were looked for and what exists."""


@dataclass
class Package:
    folder: Path
    contract: dict            # serve.json, written by the deploy stage
    why: str | None = None    # why it was picked, when no package was named

    @property
    def name(self) -> str:
        return self.contract["name"]


def available(root: Path = DEPLOY_ROOT) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/*/serve.json"))


def resolve(name: str | None, root: Path = DEPLOY_ROOT, constraints: dict | None = None) -> Package:
    """``name``: a package folder, ``<target>/<artifact>``, or None for the pick: slmake.selection.pick
    over the packages deploy shipped (the quality gate passed them) and bench ran on this machine, by
    validation accuracy (then smaller, then faster) under ``constraints`` (search.constraints). The
    test split's accuracy plays no part."""
    if name is None:
        return pick_package(root, constraints)
    folder = Path(name)
    if not (folder / "serve.json").is_file():
        folder = root / name
    if not (folder / "serve.json").is_file():
        raise PackageError(f"{name!r} is not a deploy package (no serve.json in {name} or {root / name}); "
                           f"available: {_names(root)}")
    return load(folder)


def pick_package(root: Path = DEPLOY_ROOT, constraints: dict | None = None) -> Package:
    """The package slmake.selection.pick chooses (its ``why`` set), or PackageError saying why none."""
    packages = {p.name: p for p in map(load, available(root))}
    here = [p for p in packages.values() if p.contract.get("status") == "ok"]   # benchmarked on this machine
    if not here:
        raise PackageError(f"no package under {root} was benchmarked on this machine; run `dvc repro` first, "
                           f"or name one of: {_names(root)}")
    rows = [{"experiment": None, "artifact": p.name, "val_exact_match": p.contract["figures"].get("val_exact_match"),
             "size_mb": p.contract["figures"].get("size_mb"), "decode_tok_s": p.contract["figures"].get("decode_tok_s"),
             "delta": p.contract["figures"].get("val_delta"), "delta_low": p.contract["figures"].get("val_delta_low"),
             "refused": (p.contract.get("gate") or {}).get("verdict") == "refused"} for p in here]
    chosen = pick(rows, constraints)
    if chosen.row is None:
        raise PackageError(f"{chosen.why}: " + "; ".join(chosen.excluded)
                           + " (a build from before validation scoring needs `dvc repro`; or name a package)")
    package = packages[chosen.row["artifact"]]
    package.why = f"the pick: {chosen.why}"
    return package


def spec_section(*keys: str, params: Path = Path("params.yaml")) -> dict:
    """The mapping at ``keys`` in the project's params.yaml ({} when the file or a key is absent):
    ``search.constraints`` (what the pick may choose), ``serve`` (engine, slots)."""
    if not params.is_file():
        return {}
    import yaml

    node = yaml.safe_load(params.read_text()) or {}
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return dict(node or {})


def load(folder: Path) -> Package:
    try:
        contract = json.loads((folder / "serve.json").read_text())
    except (OSError, ValueError) as e:
        raise PackageError(f"{folder / 'serve.json'}: unreadable ({e})") from None
    return Package(folder, contract)


def _names(root: Path) -> str:
    names = [f"{p.parent.name}/{p.name}" for p in available(root)]
    return ", ".join(names) or "none (run `dvc repro`)"
