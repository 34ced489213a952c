"""The check stage's fast path (noop_stamp.py): it writes the last pass's outputs back only while
nothing that pass read has moved; any edit to the spec, a hashed file, a folder it walked, a path
the spec names, or the code sends it through the full check."""

import os
import time

import pytest

from slmake.model_files import HashCache
from slmake.noop_stamp import Stamp, recording


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.jsonl").write_text('{"x": 1}\n')
    (tmp_path / "params.yaml").write_text("data:\n  source: data/a.jsonl\ndistill:\n  review: reviewed.csv\n")
    (tmp_path / "check.py").write_text("# the stage script\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build/check.ok").write_text("ok\n")
    (tmp_path / "build/check.data.json").write_text('{"sources": ["abc"]}\n')
    cache = recording(HashCache(None))
    cache.get(tmp_path / "data/a.jsonl", "sha256", lambda f: "abc")  # what the full check hashed
    stamp = Stamp(tmp_path / "build/.check.stamp.json", tmp_path / "params.yaml", [str(tmp_path / "check.py")])
    stamp.save(["build/check.ok", "build/check.data.json"], cache.read)
    return tmp_path, stamp


def _later(path):
    """Rewrite ``path`` with its own bytes and a later mtime (same size, as an in-place edit can)."""
    time.sleep(0.01)
    path.write_bytes(path.read_bytes())
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))


def test_unchanged_inputs_restore_the_removed_outputs(project):
    root, stamp = project
    before = {p: (root / p).read_text() for p in ("build/check.ok", "build/check.data.json")}
    for p in before:
        (root / p).unlink()  # DVC removes an always_changed stage's outputs before running it
    assert stamp.restore() == before
    assert {p: (root / p).read_text() for p in before} == before


@pytest.mark.parametrize("change", [
    lambda r: (r / "params.yaml").write_text((r / "params.yaml").read_text() + "seed: 1\n"),   # the spec
    lambda r: _later(r / "data/a.jsonl"),                                                      # a hashed source
    lambda r: (r / "data/b.jsonl").write_text("{}\n"),                                         # a file beside it
    lambda r: (r / "reviewed.csv").write_text("id,accept\n"),                                  # a named path appears
    lambda r: _later(r / "check.py"),                                                          # the code
])
def test_any_input_change_runs_the_full_check(project, change):
    root, stamp = project
    change(root)
    assert stamp.restore() is None


def test_missing_or_damaged_stamp_runs_the_full_check(project):
    root, stamp = project
    (root / "build/.check.stamp.json").write_text("{not json")
    assert stamp.restore() is None
    (root / "build/.check.stamp.json").unlink()
    assert stamp.restore() is None
