"""How a failed toolchain subprocess is reported: its exit, the line a user needs, where the log is."""

from __future__ import annotations

import sys

from slmake.targets.tools import exited, last_error, run_tool


def test_a_native_crash_is_named_by_its_signal(tmp_path):
    log = tmp_path / "logs" / "tool.log"
    crash = "import os, signal; print('RuntimeError: the last error line', flush=True); os.kill(os.getpid(), signal.SIGFPE)"
    rc = run_tool([sys.executable, "-c", crash], log)
    assert rc < 0 and exited(rc) == "was killed by SIGFPE"
    assert last_error(log).startswith("RuntimeError: the last error line (full log: ") and str(log) in last_error(log)
    assert exited(run_tool([sys.executable, "-c", "raise SystemExit(3)"], log)) == "exited 3"
    assert exited(-999) == "exited -999"   # not a signal number: shown as it came
