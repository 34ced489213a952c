"""benchmarks/ci_time.py reads the figures out of a `.ci/run` log: the lines it relies on are the ones
.ci/run, install.sh and pytest print."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import ci_time  # noqa: E402

LOG = """\
install.sh: [0s] Python packages (requirements/lock.txt); llama-cpp-python compiling beside them
install.sh: [150s] lock installed; waiting for the llama-cpp-python wheel
install.sh: [610s] llama.cpp toolchain (llama-cpp-python, converter, gguf-py, llama.cpp tools)
.ci/run: phase install took 990 s (at 990 s)
.ci/run: phase lint took 1 s (at 991 s)
============================= slowest 25 durations =============================
3.10s call     tests/test_a.py::test_x
======================== 800 passed, 4 warnings in 55.12s ========================
.ci/run: phase unit took 57 s (at 1048 s)
============================= slowest 25 durations =============================
283.30s setup    tests/test_loop_e2e.py::test_stable_traffic_is_not_flagged
245.53s call     tests/test_kill_recovery.py::test_kills
=========================== short test summary info ============================
SKIPPED [1] tests/test_model_families.py:91: missing
151 passed, 3 skipped, 6 warnings in 1100.20s (0:18:20)
.ci/run: phase slow took 1102 s (at 2170 s)
"""


def test_parse_reads_phases_install_steps_tiers_and_the_slow_tiers_slowest():
    got = ci_time.parse(LOG.splitlines())
    assert got["phases s"] == {"install": 990, "lint": 1, "unit": 57, "slow": 1102}
    assert got["install steps (elapsed at each)"][1] == "150 s: lock installed; waiting for the llama-cpp-python wheel"
    assert got["test tiers"]["unit"] == {"summary": "800 passed, 4 warnings", "pytest s": 55.12}
    assert got["test tiers"]["slow"]["pytest s"] == 1100.2
    assert got["slow tier's 15 slowest"] == ["283 s setup tests/test_loop_e2e.py::test_stable_traffic_is_not_flagged",
                                              "246 s call tests/test_kill_recovery.py::test_kills"]


def test_phases_and_install_steps_follow_the_lines_arrival_not_the_printed_seconds():
    """bash's SECONDS follows the wall clock: a time sync mid-run moved it by ~65 s on the dev VM."""
    lines = LOG.splitlines()
    arrived = [10.0 * i for i in range(len(lines))]
    got = ci_time.parse(lines, arrived)
    assert got["phases s"] == {"install": 30, "lint": 10, "unit": 40, "slow": 70}
    assert got["install steps (elapsed at each)"][2].startswith("20 s: llama.cpp toolchain")
    assert got["test tiers"]["slow"]["pytest s"] == 1100.2   # pytest's own figure, as printed
