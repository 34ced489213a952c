"""The target registry: name -> package. Each target is a folder (targets/<name>/: module + schema.json)
declaring TARGET, probe, validate_settings, compile, open_runner (see targets/base.py). Packages are imported
lazily so a missing toolchain only affects its target."""

from __future__ import annotations

import importlib
from types import ModuleType

REGISTRY = {
    "cpu": "slmake.targets.cpu",
    "intel_npu": "slmake.targets.intel_npu",
    "cuda": "slmake.targets.cuda",
    "qualcomm_npu": "slmake.targets.qualcomm_npu",
}


class UnknownTarget(KeyError):
    pass


def load(name: str) -> ModuleType:
    if name not in REGISTRY:
        raise UnknownTarget(f"unknown target {name!r}; known targets: {sorted(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])
