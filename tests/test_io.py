"""Atomic outputs (a failed or killed stage leaves nothing half-built) and row sampling."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from slmake.io import atomic_dir, evenly_spaced, sha256_tree, write_text_atomic


def test_atomic_dir_replaces_whole_on_success(tmp_path):
    out = tmp_path / "artifact"
    out.mkdir()
    (out / "old.bin").write_text("old")
    with atomic_dir(out) as tmp:
        (tmp / "new.bin").write_text("new")
        assert not (out / "new.bin").exists()  # nothing visible until the block succeeds
    assert sorted(p.name for p in out.iterdir()) == ["new.bin"]
    assert oct(out.stat().st_mode & 0o777) == "0o755"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_atomic_dir_keeps_previous_output_on_error(tmp_path):
    out = tmp_path / "artifact"
    out.mkdir()
    (out / "good.bin").write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half.bin").write_text("half")
            raise RuntimeError("toolchain crashed")
    assert [p.name for p in out.iterdir()] == ["good.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]  # no temp folder left behind


def test_killed_writer_leaves_old_file_intact(tmp_path):
    target = tmp_path / "metrics.json"
    write_text_atomic(target, "old\n")
    script = textwrap.dedent(f"""
        import os, time
        from slmake import io
        orig = os.replace
        def slow_replace(a, b):
            time.sleep(30)
            orig(a, b)
        os.replace = slow_replace
        io.write_text_atomic({str(target)!r}, "new\\n")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert target.read_text() == "old\n"


def test_sha256_tree_ignores_excluded_and_depends_on_content(tmp_path):
    (tmp_path / "a").write_text("1")
    h = sha256_tree(tmp_path)
    (tmp_path / "manifest.x.json").write_text("{}")
    assert sha256_tree(tmp_path, exclude="manifest.*.json") == h
    (tmp_path / "a").write_text("2")
    assert sha256_tree(tmp_path, exclude="manifest.*.json") != h


def test_evenly_spaced_covers_the_whole_split():
    rows = [f"label{i // 10}" for i in range(100)]  # sorted by label, like banking77's CSV
    picked = evenly_spaced(rows, 10)
    assert len(picked) == 10 and len(set(picked)) == 10
    assert evenly_spaced(rows, None) == rows and evenly_spaced(rows, 500) == rows
