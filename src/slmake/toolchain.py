"""Versions of the packages a target uses, for manifests and `slmake targets`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path


def versions(packages) -> dict[str, str | None]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


LLAMA_CPP_BIN_ENV = "SLMAKE_LLAMA_CPP_BIN"   # a folder holding other llama.cpp tool binaries (optional)


def llama_cpp_tool(name: str) -> Path | None:
    """A llama.cpp tool binary (`llama-imatrix`, `llama-quantize`, `llama-server`) built by
    requirements/llama_cpp.sh from the same source as llama-cpp-python: ``$SLMAKE_LLAMA_CPP_BIN``,
    then llama_cpp/lib (where the script installs them, beside the ggml CPU backends they load),
    then the venv's bin, then PATH. None when none is found."""
    candidates = []
    if os.environ.get(LLAMA_CPP_BIN_ENV):
        candidates.append(Path(os.environ[LLAMA_CPP_BIN_ENV]) / name)
    spec = importlib.util.find_spec("llama_cpp")   # not imported: its ctypes load is slow
    for loc in (spec.submodule_search_locations or []) if spec else []:
        candidates.append(Path(loc) / "lib" / name)
    candidates.append(Path(sys.prefix) / "bin" / name)
    which = shutil.which(name)
    if which:
        candidates.append(Path(which))
    return next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)
