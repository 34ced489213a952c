"""Atomic outputs (a failed or killed stage leaves nothing half-built) and row sampling."""

import os
import signal
import subprocess
import sys
import textwrap
import time

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


@pytest.mark.slow
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


def test_atomic_dir_removes_litter_of_killed_runs(tmp_path):
    out = tmp_path / "base"
    (tmp_path / ".base.k3j2.tmp").mkdir()
    (tmp_path / ".base.k3j2.tmp" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".base.old").mkdir()
    (tmp_path / ".base.curate-x1.tmp").write_text("spool")
    for keep in (".basement.x.tmp", ".train.a1.tmp", "base.tmp"):  # other outputs' litter is theirs
        (tmp_path / keep).mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "ok").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".basement.x.tmp", ".train.a1.tmp", "base", "base.tmp"]


@pytest.mark.parametrize("when", ["building", "swapping"])
def test_killed_stage_leaves_litter_that_the_next_run_removes(tmp_path, when):
    """SIGKILL while building the temp folder, or between moving the old output aside and moving
    the new one in: the next run of the stage cleans up and publishes a whole output."""
    out = tmp_path / "train"
    out.mkdir()
    (out / "v1").write_text("old")
    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from slmake import io
        orig = os.replace
        def replace(a, b):
            orig(a, b)
            if {when!r} == "swapping" and str(b).endswith(".old"):
                time.sleep(60)
        os.replace = replace
        with io.atomic_dir({str(out)!r}) as tmp:
            (tmp / "v2").write_text("half")
            if {when!r} == "building":
                time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 20
    while not list(tmp_path.glob(".train.*")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".train.*"))  # the kill left litter
    with atomic_dir(out) as tmp:
        (tmp / "v3").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]
    assert [p.name for p in out.iterdir()] == ["v3"]


def test_prune_dropped_removes_only_the_dropped_keys_outputs(tmp_path):
    from slmake.io import prune_dropped

    for t in ("cpu", "cuda"):
        (tmp_path / "build/bench" / t).mkdir(parents=True)
        (tmp_path / "build/bench" / t / "outputs.jsonl").write_text("{}\n")
        (tmp_path / "reports/bench").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"reports/bench/{t}.json").write_text("{}")
        (tmp_path / f"reports/bench/{t}.details.json").write_text("{}")
    (tmp_path / "build/bench/.cpu.x.tmp").mkdir()   # someone else's litter: not this function's job
    patterns = [f"{tmp_path}/build/bench/{{key}}", f"{tmp_path}/reports/bench/{{key}}.json",
                f"{tmp_path}/reports/bench/{{key}}.details.json", f"{tmp_path}/build/deploy/{{key}}"]
    gone = prune_dropped(patterns, {"cpu"})
    assert sorted(p.relative_to(tmp_path).as_posix() for p in gone) == [
        "build/bench/cuda", "reports/bench/cuda.details.json", "reports/bench/cuda.json"]
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert "build/bench/cpu/outputs.jsonl" in left and "reports/bench/cpu.details.json" in left
    assert "reports/bench/cpu.json" in left and "build/bench/.cpu.x.tmp" in left
    assert prune_dropped(patterns, {"cpu"}) == []
