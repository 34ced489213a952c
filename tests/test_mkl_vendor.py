"""MKL runs the same code branch on every x86-64 vendor: slmake's process setup answers MKL's vendor
check with "Intel", so `MKL_CBWR=AVX2,STRICT` is honoured on AMD too (src/slmake/mkl_vendor.py). The
control emulates a non-Intel CPU on any machine by answering "not Intel", which is what an AMD CPU
answers without the shim: MKL then silently falls back to AUTO."""

import os
import platform
import subprocess
import sys

import pytest

from slmake import mkl_vendor

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="torch's MKL ships in the x86-64 Linux wheel only")

REPORT = """
import sys
from slmake import mkl_vendor, process_setup
if sys.argv[1] == "setup":
    process_setup.portable_numerics()
from slmake.mkl_vendor import effective_branch
print(effective_branch())
print("shim mapped" if any("mkl_intel_cpu_true" in line for line in open("/proc/self/maps")) else "no shim")
"""


def clean_env() -> dict[str, str]:
    """This environment without the settings under test (a shell may export them)."""
    return {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "LD_PRELOAD", mkl_vendor.SWITCH)}


def report(mode: str, **env: str) -> list[str]:
    res = subprocess.run([sys.executable, "-c", REPORT, mode], env={**clean_env(), **env},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.split()


def test_setup_makes_mkl_run_the_avx2_strict_branch():
    assert report("setup")[0] == "AVX2,STRICT"


def test_a_cpu_mkl_does_not_call_intel_falls_back_to_auto(tmp_path):
    """The failure the shim fixes, on any CPU: a library answering "not Intel" preloaded ahead of it."""
    not_intel = mkl_vendor.build(tmp_path / "not_intel.so", "int mkl_serv_intel_cpu_true(void) { return 0; }\n")
    assert report("setup", LD_PRELOAD=str(not_intel))[0] == "AUTO,STRICT"


def test_children_inherit_the_shim():
    """Exporters and converters run as subprocesses: a child that never calls setup still has it."""
    code = ("from slmake import process_setup, mkl_vendor; process_setup.portable_numerics(); import subprocess, sys; "
            f"print(subprocess.run([sys.executable, '-c', {REPORT!r}, 'plain'], capture_output=True, text=True).stdout)")
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=180).stdout
    assert out.split() == ["AVX2,STRICT", "shim", "mapped"]


def test_native_switch_leaves_mkl_alone(monkeypatch):
    monkeypatch.setenv(mkl_vendor.SWITCH, "native")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert mkl_vendor.load() is None and "LD_PRELOAD" not in os.environ
    assert report("setup", **{mkl_vendor.SWITCH: "native"})[1:] == ["no", "shim"]


def test_build_is_cached_and_named_by_its_source(tmp_path):
    first = mkl_vendor.build(tmp_path / "a.so")
    stamp = first.stat().st_mtime_ns
    assert mkl_vendor.build(tmp_path / "a.so") == first and first.stat().st_mtime_ns == stamp
    assert mkl_vendor.shim_path().name.startswith("mkl_intel_cpu_true-")
    assert list(tmp_path.iterdir()) == [first]   # no temp folder left behind
