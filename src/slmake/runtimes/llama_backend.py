"""llama.cpp's CPU backend, loaded once per process: the one way slmake imports llama_cpp.

llama.cpp is built with one CPU backend per instruction-set level (requirements/llama_cpp.sh), each
a ``libggml-cpu-<variant>.so`` that nothing loads until asked; ``load_llama_cpp`` asks. A module of
its own so that both the runner (llamacpp.py) and the grammar builder (text_grammar.py) can use it
without importing each other.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
from pathlib import Path

_VARIANT: str | None = None
_PREFIX, _SUFFIX = ("ggml-cpu-", ".dll") if sys.platform == "win32" else ("libggml-cpu-", ".so")
PIN_ENV = "SLMAKE_GGML_CPU"   # e.g. haswell: one variant on every machine (same numerics everywhere)


def load_llama_cpp():
    """``import llama_cpp`` with ggml's CPU backend loaded, once per process.

    A ``GGML_BACKEND_DL`` build links no CPU backend into libllama: llama.cpp refuses to load a model
    ("no backends are loaded") until ``ggml_backend_load_all`` runs, which llama-cpp-python never
    calls (abetlen/llama-cpp-python#2069). ggml scores every ``libggml-cpu-<variant>`` beside
    libllama against this CPU's features and keeps the best. A build with the CPU backend linked
    in (the old portable one) has no variant files and needs nothing. ``SLMAKE_GGML_CPU=<variant>``
    loads that one instead (e.g. ``haswell``: AVX2 kernels, so outputs match across CPU families)."""
    global _VARIANT
    import llama_cpp

    if _VARIANT is None:
        lib = Path(llama_cpp.__file__).parent / "lib"
        if not any(lib.glob(f"*ggml-cpu-*{_SUFFIX}")):
            _VARIANT = "built-in"
            return llama_cpp
        # through libllama's handle: dlsym then finds the libggml libllama itself runs. The wheel
        # holds libggml.so and libggml.so.0 as two files (wheels have no symlinks), so loading
        # "libggml.so" by path (llama_cpp._ggml) maps a second copy with its own empty registry.
        libggml = llama_cpp.llama_cpp._lib
        libggml.ggml_backend_reg_count.restype = ctypes.c_size_t
        libggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        libggml.ggml_backend_load_all_from_path.restype = None
        # quiet: ggml prints a line per load through llama-cpp-python's logger (whose level table
        # predates ggml's current one); a failure is the RuntimeError below
        log = logging.getLogger("llama-cpp-python")
        level = log.level
        log.setLevel(logging.CRITICAL)
        try:
            if libggml.ggml_backend_reg_count() == 0:
                pin = os.environ.get(PIN_ENV)
                if pin:
                    _load_one(libggml, lib, pin)
                else:
                    libggml.ggml_backend_load_all_from_path(str(lib).encode())
        finally:
            log.setLevel(level)
        if libggml.ggml_backend_reg_count() == 0:
            raise RuntimeError(f"llama.cpp: none of the CPU backends in {lib} loads on this CPU "
                               "(rebuild with `bash requirements/llama_cpp.sh <venv>/bin/python`)")
        _VARIANT = _mapped_variant() or os.environ.get(PIN_ENV) or "unknown"
    return llama_cpp


def _load_one(libggml, lib: Path, variant: str) -> None:
    path = lib / f"{_PREFIX}{variant}{_SUFFIX}"
    built = sorted(p.name[len(_PREFIX):-len(_SUFFIX)] for p in lib.glob(f"{_PREFIX}*{_SUFFIX}"))
    if not path.is_file():
        raise RuntimeError(f"{PIN_ENV}={variant}: no such llama.cpp CPU backend; built: {', '.join(built)}")
    libggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
    libggml.ggml_backend_load.restype = ctypes.c_void_p
    if not libggml.ggml_backend_load(str(path).encode()):
        raise RuntimeError(f"{PIN_ENV}={variant}: this CPU lacks an instruction set that backend needs "
                           f"(built: {', '.join(built)})")


def cpu_variant() -> str:
    """The CPU backend this process runs (``zen4``, ``haswell``, ... or ``built-in``)."""
    load_llama_cpp()
    return _VARIANT or "unknown"


def _mapped_variant() -> str | None:
    """ggml dlopens every variant to score it and keeps only the winner mapped."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    found = sorted(set(re.findall(r"ggml-cpu-([\w.]+?)\.(?:so|dll|dylib)\b", maps)))
    return ",".join(found) or None
