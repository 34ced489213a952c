"""`slmake search` (issue 19 items 1, 3, 6) without DVC: the decisions never read a test-split
figure; an Optuna search resumes from its journal after a kill; a failed trial is recorded with its
reason and the search goes on. `dvc exp run` is replaced here (only here) by a fake that commits
what a real one would (params.yaml, bench figures) under the experiment's ref; tests/
test_search_e2e.py runs real experiments."""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slmake.search import conclude, launch, run_search, search_file
from slmake.search.rows import objective_values, pick_test_figure, trial_rows
from slmake.search.trial import Ledger, TrialRunner, exp_ref
from slmake.selection import pareto, pick
from slmake.spec import SpecError

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def _bench(val: dict[str, float], test: dict[str, float]) -> dict:
    sizes = {"gguf_f16": 6.3, "gguf_q8_0": 3.4, "gguf_q4_k_m": 2.0}
    return {"metrics": {"cpu": {a: {"val_exact_match": v, "exact_match": test[a], "size_mb": sizes[a],
                                    "decode_tok_s": 3000.0 + 100 * i, "val_delta": 0.0, "val_delta_ci95": 0.01}
                                for i, (a, v) in enumerate(sorted(val.items()))}},
            "details": {"cpu": {a: {"status": "ok"} for a in val}}}


def test_no_decision_reads_a_test_figure():
    """Trials whose test figures are permuted (and made extreme) give the same rows, objective
    values, Pareto front and pick; only the pick's test figure, read after the pick, differs."""
    rng = random.Random(0)
    arts = ["gguf_f16", "gguf_q8_0", "gguf_q4_k_m"]
    vals = [{a: round(rng.random(), 3) for a in arts} for _ in range(4)]
    tests = [{a: round(rng.random(), 3) for a in arts} for _ in range(4)]
    shuffled = [dict(zip(arts, rng.sample(list(t.values()), 3))) for t in reversed(tests)]

    def decide(test_figs, constraints):
        per_trial = [trial_rows(f"s-{i}", {"cpu": _bench(v, t)}) for i, (v, t) in enumerate(zip(vals, test_figs))]
        values = [objective_values(pick(rows, constraints).row) for rows in per_trial]
        rows = pareto([r for rows in per_trial for r in rows])
        best = pick(rows, constraints).row
        return rows, values, best

    for constraints in ({}, {"max_size_mb": 4.0}, {"min_decode_tok_s": 3150.0}):
        a, b = decide(tests, constraints), decide(shuffled, constraints)
        assert a == b
        assert a[2] is not None and not any("exact_match" in r for r in a[0])  # val_exact_match only
        ext = decide([{k: 1.0 for k in t} if i % 2 else {k: 0.0 for k in t} for i, t in enumerate(tests)], constraints)
        assert ext == a
    i = int(a[2]["experiment"].split("-")[1])
    assert pick_test_figure({"cpu": _bench(vals[i], tests[i])}, "cpu", a[2]["artifact"]) == tests[i][a[2]["artifact"]]


def test_search_file_names_its_problems(tmp_path):
    (tmp_path / "search").mkdir()
    (tmp_path / "search/a.yaml").write_text("# @package _global_\ntrain:\n  lr: 0.1\n")
    (tmp_path / "search/b.yaml").write_text("# @package _global_\nhydra: {}\n")
    with pytest.raises(SpecError, match=r"a.yaml: top-level key\(s\) \['train'\]"):
        search_file(tmp_path, "a")
    with pytest.raises(SpecError, match=r"name the search to run \(a, b\)"):
        search_file(tmp_path, None)
    with pytest.raises(SpecError, match=r"c.yaml: no such search \(defined: a, b\)"):
        search_file(tmp_path, "c")


class FakeDvc:
    """Stands in for `dvc exp run --temp -n NAME -S ...`: commits params.yaml (the overrides) and
    reports/bench/cpu{,.details}.json under refs/exps/<baseline>/NAME, as DVC would. Validation
    accuracy peaks at train.lr=0.002; test accuracy is its negative (a search reading it would go
    the wrong way). ``kill_at``: raise KeyboardInterrupt on that call (the driver killed mid-trial);
    ``fail_at``: that call's trial exits 1 with an error; ``hang_at``: that call's trial is a real
    process that never ends, run as `dvc exp run` is (stopped at the search's --timeout)."""

    def __init__(self, kill_at=None, fail_at=None, sleep=0.0, hang_at=None):
        self.calls, self.kill_at, self.fail_at, self.sleep, self.hang_at = [], kill_at, fail_at, sleep, hang_at

    def __call__(self, repo, name, overrides, log, force=False, temp=True, env=None, deadline=None):
        t0 = time.time()
        self.calls.append(list(overrides))
        if len(self.calls) == self.kill_at:
            raise KeyboardInterrupt
        if len(self.calls) == self.hang_at:
            res = launch.run_until(["sleep", "60"], repo, deadline=deadline)
            return res.returncode, res.stdout + res.stderr
        if len(self.calls) == self.fail_at:
            return 1, "Running stage 'train':\nERROR: failed to reproduce 'train': loss is nan"
        o = dict(x.split("=", 1) for x in overrides)
        lr, quant = float(o["train.lr"]), o.get("targets.cpu.gguf.quants", "[q8_0]").strip("[]")
        val = round(0.9 - abs(lr - 0.002) * 100, 4)
        art = f"gguf_{quant}"
        figures = {art: (val, {"q8_0": 3.4, "q4_k_m": 2.0}[quant]), "onnx_int4": (round(val - 0.01, 4), 2.5)}
        bench = {"cpu": {a: {"val_exact_match": v, "exact_match": round(1 - v, 4), "decode_tok_s": 3000.0, "size_mb": mb,
                             "val_delta": 0.0, "val_delta_ci95": 0.01} for a, (v, mb) in figures.items()}}
        files = {"params.yaml": yaml.safe_dump({"train": {"lr": lr}, "targets": {"cpu": {}}}),
                 "reports/bench/cpu.json": json.dumps(bench), "reports/bench/cpu.details.json": json.dumps({"cpu": {}})}
        if self.sleep:  # a trial that takes a while: parallel ones overlap (and say so in calls.jsonl)
            time.sleep(self.sleep)
            with open(Path(repo) / ".slmake/calls.jsonl", "a") as f:
                f.write(json.dumps({"name": name, "start": t0, "end": time.time(), "env": env, "pid": os.getpid()}) + "\n")
        env = dict(os.environ, GIT_INDEX_FILE=str(Path(repo) / f".git/fake-index-{name}"))
        run = lambda *a, **k: subprocess.run([*GIT, *a], cwd=repo, env=env, check=True, capture_output=True,  # noqa: E731
                                             text=True, **k).stdout.strip()
        run("read-tree", "HEAD")
        for path, text in files.items():
            blob = run("hash-object", "-w", "--stdin", input=text)
            run("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
        head = run("rev-parse", "HEAD")
        commit = run("commit-tree", run("write-tree"), "-p", head, "-m", name)
        run("update-ref", f"refs/exps/{head[:2]}/{head[2:]}/{name}", commit)
        return 0, "Running stage 'train':\nStage 'curate' is cached - skipping run, checking out outputs\n"


@pytest.fixture
def project(tmp_path):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    (tmp_path / "conf/search/t.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: slmake_optuna\n"
        "hydra:\n  sweeper:\n    sampler: tpe\n    n_trials: 4\n    params:\n"
        "      train.lr: choice(0.001, 0.002, 0.004)\n      targets.cpu.gguf.quants: choice([q8_0], [q4_k_m])\n"
        "search:\n  constraints:\n    max_size_mb: 3.0\n")
    (tmp_path / ".gitignore").write_text("/.slmake/\n")
    subprocess.run("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init",
                   shell=True, cwd=tmp_path, check=True)
    return tmp_path


@pytest.mark.slow  # ~4 s: Hydra multiruns and Optuna studies, no DVC
def test_optuna_search_resumes_after_a_kill_and_records_a_failure(project, capsys):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    killed = FakeDvc(kill_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_search(project, "t", run_exp=killed)
    journal = project / ".slmake/search/t/optuna.journal"
    assert journal.exists() and len(Ledger(project / ".slmake/search/t/trials.jsonl").records()) == 2
    interrupted = killed.calls[2]

    fake = FakeDvc(fail_at=2)
    run_search(project, "t", run_exp=fake)
    assert fake.calls[0] == interrupted  # the trial the kill stopped runs first
    storage = JournalStorage(JournalFileBackend(str(journal)))
    (study,) = storage.get_all_studies()
    trials = storage.get_all_trials(study._study_id)
    states = [t.state for t in trials]
    assert states.count(TrialState.RUNNING) == 0
    assert trials[2].state == TrialState.FAIL and trials[2].user_attrs["reason"].startswith("interrupted")
    counted = [t for t in trials if not str(t.user_attrs.get("reason", "")).startswith("interrupted")]
    assert len(counted) == 4  # the budget: 4 trials in the whole study, the interrupted one not counted
    records = Ledger(project / ".slmake/search/t/trials.jsonl").records()
    assert [r["trial"] for r in records] == [0, 1, 3, 4] and all(
        exp_ref(project, r["baseline"], r["experiment"]) for r in records if r["status"] != "failed")
    failed = [r for r in records if r["status"] == "failed"]  # recorded with its reason, the search went on
    assert len(failed) == 1 and "loss is nan" in failed[0]["reason"] and failed[0]["overrides"] == fake.calls[1]
    rows = [r for rec in records if rec["status"] != "failed" for r in rec["rows"]]
    # search.constraints.max_size_mb 3.0 rules out q8_0 (3.4 MB), whose validation accuracy is higher
    best = max((r for r in rows if r["size_mb"] <= 3.0), key=lambda r: r["val_exact_match"])
    assert max(r["val_exact_match"] for r in rows) > best["val_exact_match"]
    out = capsys.readouterr().out
    md = (project / "reports/search/t.md").read_text()
    csv = (project / "reports/search/t.csv").read_text().splitlines()
    assert csv[0] == "experiment,target,artifact,val_exact_match,size_mb,decode_tok_s,delta,delta_low,refused,pareto,pick"
    assert "★" in md and "← pick" in md and "search_t_accuracy_vs_size" in (project / "reports/search/dvc.yaml").read_text()
    picked = [ln.split(",") for ln in csv[1:] if ln.endswith(",True")]
    assert len(picked) == 1 and picked[0][0] == best["experiment"] and picked[0][2] == best["artifact"]
    assert f"dvc exp apply {best['experiment']}" in out
    # the pick's test figure (1 - val in the fake) is reported, once, after the pick
    assert out.count("scored once, after the pick") == 1
    assert f"after the pick): **{round(1 - best['val_exact_match'], 4)}**" in out


def test_a_row_is_refused_exactly_when_the_trials_gate_refuses_its_artifact():
    bench = _bench({"gguf_f16": 0.5, "gguf_q4_k_m": 0.6}, {"gguf_f16": 0.5, "gguf_q4_k_m": 0.6})
    bench["metrics"]["cpu"]["gguf_q4_k_m"].update(val_delta=-0.1, val_delta_ci95=0.02)  # low -0.12
    gated = {r["artifact"]: r["refused"] for r in trial_rows("s-0", {"cpu": bench}, max_drop=0.02)}
    assert gated == {"gguf_f16": False, "gguf_q4_k_m": True}
    assert not any(r["refused"] for r in trial_rows("s-0", {"cpu": bench}, max_drop=None))  # no gate
    assert pick(trial_rows("s-0", {"cpu": bench}, max_drop=None), {}).row["artifact"] == "gguf_q4_k_m"
    assert pick(trial_rows("s-0", {"cpu": bench}, max_drop=0.02), {}).row["artifact"] == "gguf_f16"


def test_launch_plan_divides_the_cores_and_clones_off_this_process(monkeypatch):
    """search.parallel / --parallel: the basic launcher becomes Hydra's joblib launcher, a batch of N
    trials shares this machine's cores (SLMAKE_PARALLEL_JOBS=N); submitit/Ray trials run in clones."""
    from slmake.search import launch

    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert launch.plan(basic, None, optuna=False) == launch.Plan("basic", 1, (), 1, False)
    p = launch.plan(basic, 2, optuna=True)
    assert (p.kind, p.jobs, p.clone) == ("joblib", 2, False)
    assert p.overrides == ("hydra/launcher=joblib", "hydra.sweeper.n_jobs=2", "hydra.launcher.n_jobs=2",
                           "hydra.launcher.prefer=processes")
    assert launch.trial_env(2) == {"SLMAKE_PARALLEL_JOBS": "2"} and launch.trial_env(1) == {}
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launch.plan(joblib, None, optuna=False, n_jobs=3).jobs == 3       # the launcher's own n_jobs
    monkeypatch.setattr(launch, "cores", lambda: 4)
    assert launch.plan(joblib, None, optuna=False, n_jobs=-1).parallel == 4  # joblib's -1: every core
    local = launch.plan("hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", 2, optuna=False)
    assert local == launch.Plan("submitit_local", 2, ("hydra.sweeper.max_batch_size=2",), 2, True)
    slurm = launch.plan("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", 8, optuna=True)
    assert (slurm.jobs, slurm.clone) == (1, True) and "hydra.launcher.array_parallelism=8" in slurm.overrides
    ray = launch.plan("hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher", 2, optuna=False)
    assert ray == launch.Plan("ray", 2, ("hydra.sweeper.max_batch_size=2",), 2, True)
    ours = launch.plan("hydra_plugins.slmake_search.ray_launcher.SlmakeRayLauncher", 2, optuna=True)
    assert ours == launch.Plan("ray", 2, ("hydra.sweeper.n_jobs=2", "hydra.launcher.num_cpus=2"), 2, True)
    for bad in (0, -1, "2", True):
        with pytest.raises(SpecError, match=r"search\.parallel: .*expected a positive integer"):
            launch.plan(basic, bad, optuna=False)


def test_the_ray_launcher_is_a_hydra_option_without_ray_installed():
    """hydra/launcher=slmake_ray composes (Ray itself is imported only when a launch starts)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", ["hydra/launcher=slmake_ray", "hydra.launcher.num_cpus=2"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.slmake_search.ray_launcher.SlmakeRayLauncher"
    assert (cfg.hydra.launcher.num_cpus, cfg.hydra.launcher.address) == (2, None)


def test_a_clone_launcher_names_the_missing_remote(tmp_path):
    from slmake.search import launch

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc/config").write_text("")
    with pytest.raises(SpecError, match=r"search.git_remote: the project has no git remote 'origin'"):
        launch.resolve_remotes(tmp_path, None, None, "submitit_local")
    subprocess.run(["git", "remote", "add", "origin", "../hub.git"], cwd=tmp_path, check=True)
    with pytest.raises(SpecError, match=r"search.dvc_remote: the project has no default DVC remote"):
        launch.resolve_remotes(tmp_path, None, None, "submitit_local")
    (tmp_path / ".dvc/config").write_text("[core]\n    remote = store\n['remote \"store\"']\n    url = ../store\n")
    with pytest.raises(SpecError, match=r"search.dvc_remote: no DVC remote named 'other' \(defined: store\)"):
        launch.resolve_remotes(tmp_path, None, "other", "submitit_local")
    r = launch.resolve_remotes(tmp_path, None, None, "submitit_local")
    # relative local paths made absolute (git's from the project, DVC's from .dvc/): a clone elsewhere reaches them
    assert r == launch.Remotes("origin", str(tmp_path.parent / "hub.git"), "store", str(tmp_path / "store"))


def test_search_file_search_block_keys(tmp_path):
    (tmp_path / "search").mkdir()
    (tmp_path / "search/a.yaml").write_text("# @package _global_\nsearch:\n  parallel: 2\n  paralel: 3\n")
    with pytest.raises(SpecError, match=r"a.yaml: search.paralel: unknown key"):
        search_file(tmp_path, "a")


@pytest.mark.slow  # ~6 s: Hydra's joblib launcher starts worker processes
def test_parallel_search_runs_trials_at_once_sharing_the_cores(project):
    """--parallel 2 with the Optuna sweeper: trials asked two at a time and run by Hydra's joblib
    launcher in two processes at once, each `dvc exp run` told it shares the cores with one other."""
    assert run_search(project, "t", run_exp=FakeDvc(sleep=1.5), parallel=2) == 0
    calls = [json.loads(ln) for ln in (project / ".slmake/calls.jsonl").read_text().splitlines()]
    assert len(calls) == 4 and all(c["env"] == {"SLMAKE_PARALLEL_JOBS": "2"} for c in calls)
    by = {c["name"]: c for c in calls}
    for a, b in (("t-000", "t-001"), ("t-002", "t-003")):  # one batch: both ran at once, in two processes
        assert by[a]["start"] < by[b]["end"] and by[b]["start"] < by[a]["end"] and by[a]["pid"] != by[b]["pid"]
    assert max(by["t-000"]["end"], by["t-001"]["end"]) <= min(by["t-002"]["start"], by["t-003"]["start"])
    records = Ledger(project / ".slmake/search/t/trials.jsonl").records()
    assert [r["status"] for r in records] == ["ok"] * 4


def _gone(pid: int, within: float = 3.0) -> bool:
    """``pid`` has exited (or is a zombie) within ``within`` s (SIGKILL is delivered asynchronously)."""
    import psutil

    t0 = time.time()
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.time() - t0 > within:
            return False
        time.sleep(0.02)


def test_run_until_stops_the_whole_process_group_at_the_deadline(tmp_path):
    """--timeout's kill: the trial's whole process group gets SIGINT (a stage's command dies of it as
    of Ctrl-C), then SIGKILL after the grace for what ignores it; exit code launch.TIMEOUT."""
    t0 = time.time()
    res = launch.run_until(["sh", "-c", "sleep 30"], tmp_path, deadline=t0 + 0.1, grace=5)
    assert res.returncode == launch.TIMEOUT and "ERROR: timeout" in res.stderr
    assert time.time() - t0 < 4  # SIGINT was enough: no wait for the grace (5 s)
    # a child that ignores SIGINT (and its shell): SIGKILL after the grace
    script = "trap '' INT; sleep 30 & echo $! > child.pid; wait"
    t0 = time.time()
    res = launch.run_until(["sh", "-c", script], tmp_path, deadline=t0 + 1.5, grace=0.2)
    assert res.returncode == launch.TIMEOUT and 1.7 <= time.time() - t0 < 6
    assert (tmp_path / "child.pid").exists(), "the shell did not start its child within 1.5 s"
    assert _gone(int((tmp_path / "child.pid").read_text()))
    ok = launch.run_until(["sh", "-c", "echo done; exit 3"], tmp_path, deadline=time.time() + 30)
    assert (ok.returncode, ok.stdout) == (3, "done\n")  # before the deadline: as subprocess.run


def test_run_until_writes_the_trial_log_as_the_output_comes(tmp_path):
    """A trial of an hour can be followed with `tail -f`: its output is in the log while it runs (the
    command waits until it sees its own first line there), and comes back as stdout, stderr merged."""
    log = tmp_path / "logs/t-000.log"
    script = ('echo first; echo warn >&2; for i in $(seq 100); do grep -q first "$LOG" && { echo seen; exit 0; }; '
              'sleep 0.05; done; echo unseen; exit 1')
    res = launch.run_until(["sh", "-c", script], tmp_path, env={**os.environ, "LOG": str(log)},
                           deadline=time.time() + 30, log=log)
    assert (res.returncode, res.stdout, res.stderr) == (0, "first\nwarn\nseen\n", "")
    assert log.read_text() == res.stdout


def test_run_until_stops_a_trial_of_a_search_started_as_a_background_job(tmp_path):
    """`slmake search ... &` (or nohup, or a CI runner) starts with SIGINT ignored, which a child
    inherits: a Python child (DVC) would then never see the timeout's SIGINT. run_until gives the
    trial SIGINT's default back, so it still stops at once, not after the grace."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        t0 = time.time()
        res = launch.run_until([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path,
                               deadline=t0 + 0.1, grace=5)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert res.returncode == launch.TIMEOUT and "KeyboardInterrupt" in res.stderr
    assert time.time() - t0 < 4  # SIGINT, not the SIGKILL after the 5 s grace


def test_a_failed_or_stopped_trial_is_recorded_and_the_pick_is_among_the_finished(project, capsys):
    """A grid's trials (the job function Hydra's sweeper calls): one whose `dvc exp run` fails is
    recorded with its reason and the next one runs (issue 19 item 6); under --timeout the trial
    running when the budget runs out is stopped and recorded as failed ("timeout"), the next one is
    skipped, and the pick is made among the finished ones."""
    baseline = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    state = project / ".slmake/search/t"
    fake = FakeDvc(fail_at=1, hang_at=3)
    runner = TrialRunner(repo=project, search="t", baseline=baseline, state=state, run_exp=fake)
    failed = runner.run(0, ["train.lr=0.002", "targets.cpu.gguf.quants=[q4_k_m]"])
    assert failed["status"] == "failed" and "loss is nan" in failed["reason"]  # raised nothing: the sweep goes on
    assert runner.run(1, ["train.lr=0.001", "targets.cpu.gguf.quants=[q4_k_m]"])["status"] == "ok"
    runner.deadline = runner.stop_at = time.time() + 0.3
    t0 = time.time()
    stopped = runner.run(2, ["train.lr=0.004", "targets.cpu.gguf.quants=[q4_k_m]"])
    assert time.time() - t0 < 2 and stopped["status"] == "failed" and stopped["reason"].startswith("timeout: stopped after")
    assert "commit" not in stopped and exp_ref(project, baseline, "t-002") is None  # no experiment
    assert runner.run(3, ["train.lr=0.004", "targets.cpu.gguf.quants=[q8_0]"])["status"] == "skipped"
    assert conclude(project, "t", baseline, {}, 1.0) == 0
    md, out = (project / "reports/search/t.md").read_text(), capsys.readouterr().out
    assert "**Pick: `t-001` cpu/gguf_q4_k_m**" in md and "| t-000 |" in md and "loss is nan" in md
    assert "Failed trial 0 (t-000): " in out and "Failed trial 2 (t-002): timeout: stopped after" in out
    assert [r["status"] for r in Ledger(state / "trials.jsonl").records()] == ["failed", "ok", "failed", "skipped"]
    assert len(fake.calls) == 3


@pytest.mark.slow  # ~4 s: two Hydra multiruns and an Optuna study, no DVC
def test_optuna_search_timeout_stops_a_trial_and_a_resume_runs_it_again(project):
    """--timeout with Optuna: the trial running when the budget runs out is stopped (FAIL, reason
    timeout), no trial starts after it, and it does not count against --trials: the next run of the
    search runs it first."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    t0 = time.time()
    assert run_search(project, "t", run_exp=FakeDvc(hang_at=1), timeout=2) == 1  # no trial finished: no pick
    assert time.time() - t0 < 10
    records = Ledger(project / ".slmake/search/t/trials.jsonl").records()
    assert [r["status"] for r in records] == ["failed"] and records[0]["reason"].startswith("timeout")
    again = FakeDvc()
    assert run_search(project, "t", run_exp=again) == 0
    assert again.calls[0] == records[0]["overrides"]  # (the sampler may propose a finished trial's again: reused)
    storage = JournalStorage(JournalFileBackend(str(project / ".slmake/search/t/optuna.journal")))
    (study,) = storage.get_all_studies()
    trials = storage.get_all_trials(study._study_id)
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 4  # the budget: 4 counted
    assert trials[1].user_attrs["retry_of"] == 0

