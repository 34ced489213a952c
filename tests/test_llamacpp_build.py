"""The llama.cpp build: CPU variants chosen at run time, never the AMX one, and every use of
llama_cpp goes through the loader that picks the variant."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "requirements/llama_cpp.sh"
# ggml's x86 list as vendored in llama-cpp-python 0.3.36 (ggml/src/CMakeLists.txt), abridged
GGML_LIST = """\
    if (GGML_SYSTEM_ARCH STREQUAL "x86")
        ggml_add_cpu_backend_variant(x64)
        ggml_add_cpu_backend_variant(sse42              SSE42)
        ggml_add_cpu_backend_variant(haswell            SSE42 AVX F16C FMA AVX2 BMI2)
        ggml_add_cpu_backend_variant(skylakex           SSE42 AVX F16C FMA AVX2 BMI2 AVX512)
        ggml_add_cpu_backend_variant(icelake            SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI AVX512_VNNI)
            ggml_add_cpu_backend_variant(zen4           SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16)
        ggml_add_cpu_backend_variant(alderlake          SSE42 AVX F16C FMA AVX2 BMI2 AVX_VNNI)
            ggml_add_cpu_backend_variant(sapphirerapids SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16 AMX_TILE AMX_INT8)
    elseif(GGML_SYSTEM_ARCH STREQUAL "ARM")
            ggml_add_cpu_backend_variant(armv8.2_1    DOTPROD)
"""


def _patcher() -> str:
    text = SCRIPT.read_text()
    return re.search(r"<<'PYEOF'\n(.*?)\nPYEOF", text, re.S).group(1)


def _variants() -> list[str]:
    return re.search(r'^VARIANTS="([^"]+)"', SCRIPT.read_text(), re.M).group(1).split()


def test_variant_list_is_cut_to_ours_without_amx(tmp_path):
    cmake = tmp_path / "CMakeLists.txt"
    cmake.write_text(GGML_LIST)
    subprocess.run([sys.executable, "-c", _patcher(), str(cmake), " ".join(_variants())], check=True)
    built = re.findall(r"^\s*ggml_add_cpu_backend_variant\(([\w.]+)", cmake.read_text(), re.M)
    assert built == ["x64", "haswell", "skylakex", "icelake", "zen4", "alderlake", "armv8.2_1"]
    assert "# slmake: not built: ggml_add_cpu_backend_variant(sapphirerapids" in cmake.read_text()
    assert "sapphirerapids" not in _variants()


def test_variant_list_change_fails_loudly(tmp_path):
    cmake = tmp_path / "CMakeLists.txt"
    cmake.write_text(GGML_LIST.replace("zen4 ", "zen5 "))
    r = subprocess.run([sys.executable, "-c", _patcher(), str(cmake), " ".join(_variants())],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "missing ['zen4']" in r.stderr and "update VARIANTS" in r.stderr


def test_every_llama_cpp_use_goes_through_the_loader():
    """A GGML_BACKEND_DL build has no CPU backend until ggml's loader runs: a bare `import llama_cpp`
    followed by Llama(...) fails with 'no backends are loaded'."""
    offenders = []
    for path in (ROOT / "src/slmake").rglob("*.py"):
        if path.name == "llama_backend.py" and path.parent.name == "runtimes":
            continue  # the loader itself
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "llama_cpp" or n.startswith("llama_cpp.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"use slmake.runtimes.llama_backend.load_llama_cpp() instead: {offenders}"


def test_loader_picks_a_variant_this_cpu_runs():
    pytest.importorskip("llama_cpp")
    from slmake.runtimes.llamacpp import cpu_variant, load_llama_cpp

    llama_cpp = load_llama_cpp()
    lib = Path(llama_cpp.__file__).parent / "lib"
    built = sorted(p.name.split("ggml-cpu-")[1].rsplit(".", 1)[0] for p in lib.glob("*ggml-cpu-*"))
    variant = cpu_variant()
    if not built:
        assert variant == "built-in"
        pytest.skip("llama-cpp-python built without CPU variants (old portable build)")
    assert variant in built and variant != "sapphirerapids"
    flags = set(re.findall(r"\w+", Path("/proc/cpuinfo").read_text())) if Path("/proc/cpuinfo").is_file() else set()
    if {"avx512f", "avx512_vnni", "avx512_bf16", "avx512vbmi"} <= flags and "zen4" in built:
        assert variant == "zen4"
    elif "avx2" in flags and "haswell" in built:
        assert variant != "x64"
