"""Make MKL take the same code path on AMD as on Intel, so fp32 matmuls give the same bytes on both.

torch's CPU wheel links oneMKL, and MKL picks its sgemm kernels by CPU vendor: on a CPU it does not
recognise as Intel it ignores `MKL_CBWR` (its reproducibility branches "are available only for Intel
processors") and runs its own AMD path, whose rounding differs. So the committed `dvc.lock` built on an
AMD EPYC matched an Intel Xeon for `curate` only (issue 17). MKL asks `mkl_serv_intel_cpu_true()`
(and its sibling `mkl_serv_intel_cpu()`) whether the CPU is Intel, and libtorch calls them through its
PLT (dynamic symbols). A two-line shared library that defines both to return 1, loaded RTLD_GLOBAL
before torch, wins the symbol lookup, and MKL then honours `MKL_CBWR=AVX2,STRICT` on every vendor: the
AVX2 CNR kernels, which AMD CPUs run natively. On Intel it changes nothing (both already return 1).

Measured on an Intel Xeon (AVX-512, AMX): defining it to return 0 instead sends MKL to the
`COMPATIBLE` branch's bytes whatever `MKL_CBWR` says, which is how we know the override is reached.

The library is compiled from the source below with the C compiler install already needs (llama.cpp),
once, into the environment (`python -m slmake.mkl_vendor` at install); children inherit it through
`LD_PRELOAD` (the converter, ONNX and OpenVINO exporters run as subprocesses). `SLMAKE_MKL_VENDOR=native`
turns it off (MKL then picks its kernels by vendor again, and a lock built on the other vendor differs).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Both of MKL's vendor queries answer "Intel" (each returns 1 on an Intel CPU: measured), so no code
# path that asks either one sees an AMD CPU.
SOURCE = "int mkl_serv_intel_cpu_true(void) { return 1; }\nint mkl_serv_intel_cpu(void) { return 1; }\n"
SWITCH = "SLMAKE_MKL_VENDOR"            # "native": leave MKL's vendor check alone


class ShimError(RuntimeError):
    """No C compiler could build the shim."""


def shim_paths() -> list[Path]:
    """Where the compiled shim may live, named by its source's hash: inside this Python environment,
    else (a read-only environment) the user's cache."""
    name = f"mkl_intel_cpu_true-{hashlib.sha256(SOURCE.encode()).hexdigest()[:12]}.so"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "slmake")
    return [Path(sys.prefix, "lib", "slmake", name), cache / name]


def shim_path() -> Path:
    """The first of shim_paths() that exists, or the first one a shim can be written to."""
    paths = shim_paths()
    for path in paths:
        if path.exists():
            return path
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path.parent, os.W_OK):
            return path
    return paths[0]


def build(path: Path | None = None, source: str = SOURCE) -> Path:
    """Compile the shim (atomically: parallel stages may race; the loser's rename is harmless)."""
    path = path or shim_path()
    if path.exists():
        return path
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise ShimError("no C compiler (cc, gcc or clang) on PATH")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src, out = Path(tmp, "shim.c"), Path(tmp, "shim.so")
        src.write_text(source)
        res = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(src)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise ShimError(f"{cc} failed: {res.stderr.strip()[-500:]}")
        os.replace(out, path)
    return path


def applies() -> bool:
    """x86-64 Linux (where torch's wheel carries MKL) and not switched off."""
    return (sys.platform == "linux" and platform.machine().lower() in ("x86_64", "amd64")
            and os.environ.get(SWITCH, "").lower() != "native")


def load() -> Path | None:
    """Load the shim into this process (before torch) and name it in LD_PRELOAD for children.
    Returns its path, or None where it does not apply. Never fails a stage: without a compiler it
    warns that the bytes will depend on the CPU vendor."""
    if not applies():
        return None
    if "torch" in sys.modules:
        print("slmake: torch was imported before process setup: MKL keeps its vendor dispatch here",
              file=sys.stderr)
        return None
    try:
        path = build()
    except (ShimError, OSError) as e:
        print(f"slmake: warning: MKL vendor shim not built ({e}); fp32 results on AMD and Intel CPUs will differ",
              file=sys.stderr)
        return None
    ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL)
    preload = os.environ.get("LD_PRELOAD", "").split()
    if str(path) not in preload:
        os.environ["LD_PRELOAD"] = " ".join([*preload, str(path)])
    return path


# mkl_cbwr.h: the branch codes MKL reports (MKL_CBWR_ALL = ~0 asks for branch and STRICT together).
BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2",
            9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}
STRICT = 0x10000


def effective_branch() -> str:
    """The code branch MKL actually runs in this process, e.g. "AVX2,STRICT" (imports torch; MKL's
    own query, as libtorch exports it). Without the shim an AMD CPU reports "AUTO,STRICT" here."""
    import torch

    lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    if not hasattr(lib, "mkl_serv_cbwr_get"):
        return "no MKL"
    value = lib.mkl_serv_cbwr_get(-1)
    name = BRANCHES.get(value & 0xFFFF, str(value & 0xFFFF))
    return f"{name},STRICT" if value & STRICT else name


if __name__ == "__main__":  # install.sh: build it once so no stage compiles
    if applies():
        print(build())
