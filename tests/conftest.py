import os
import re
import sys
from pathlib import Path

# Stages run `python`/`dvc` through DVC's shell: make them the interpreter running the tests.
_bin = str(Path(sys.executable).parent)
if not os.environ.get("PATH", "").startswith(_bin):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


import pytest  # noqa: E402


def pytest_configure(config):
    """Under pytest-xdist (`-n 2`, .ci/run's slow tier) each worker gets its own share of the cores,
    inherited by every stage, server and tool it starts: thread keys left null (the tests' specs)
    then resolve to that share (process_setup.resolve_threads), so two workers never put two
    spinning thread pools on one core. An e2e test spends about half its time on one core
    (DVC, imports, subprocess starts): two pinned workers fill the other."""
    worker = getattr(config, "workerinput", None)
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    cpus, n, count = sorted(os.sched_getaffinity(0)), int(worker["workerid"][2:]), int(worker["workercount"])
    if count <= len(cpus):
        share = len(cpus) // count
        os.sched_setaffinity(0, cpus[n * share:(n + 1) * share])


# The slow tier's longest units of work (setup + calls, `--durations` in CI), handed out first so
# that the two xdist workers start with them instead of ending on them.
LONGEST_FIRST = ("test_loop_e2e.py", "micro_repo", "test_kill_recovery.py", "test_model_families.py")
# the test files that take the session's micro build (built once per worker that runs one of them)
MICRO_FILES = {p.name for p in Path(__file__).parent.glob("test_*.py")
               if re.search(r"def \w+\([^)]*\bmicro_repo\b", p.read_text())}


def _unit(nodeid: str) -> str:
    """A test's unit of work under xdist: its file, or "micro_repo" for the files sharing that build."""
    name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return "micro_repo" if name in MICRO_FILES else name


def pytest_xdist_make_scheduler(config, log):
    """One worker runs a whole unit (its module fixtures, or the micro build, are built once), units
    in collection order (the longest first, below). xdist's own `loadgroup` would do this with marks,
    but it renames node ids through an attribute pytest 9 no longer has."""
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return ByUnit(config, log)


def pytest_collection_modifyitems(items):
    """An e2e test is a slow test too: `pytest -m "not slow"` is the unit tier (.ci/run)."""
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda i: rank.get(_unit(i.nodeid), len(rank)))


@pytest.fixture(scope="session")
def micro_repo(tmp_path_factory):
    """The micro pipeline built once per session: the pipeline and the serve tests share it."""
    from e2e_utils import build_micro

    return build_micro(tmp_path_factory.mktemp("slmake_e2e"))


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory):
    """(model folder, PROMPTS as token ids, transformers' fp32 greedy tokens for them) of
    e2e_utils.tiny_llama: what the cuda and intel_npu target tests compare their artifacts with."""
    from e2e_utils import NEW, PROMPTS, tiny_llama
    from slmake.base_model import load_tokenizer
    from slmake.process_setup import resolve_threads
    from slmake.runtimes.hf import HFRunner

    model = tiny_llama(tmp_path_factory.mktemp("model"))
    tok = load_tokenizer(model)
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    ref = HFRunner(model, threads=resolve_threads(None))
    want = [ref.generate(i, NEW).tokens for i in ids]
    ref.close()
    return model, ids, want
