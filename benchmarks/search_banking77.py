"""BANKING77: the best artifact `slmake search` finds within a wall-time budget on this machine
(issue 19's figure), in two rounds of increasing fidelity. Every decision reads the validation split;
the test split is read once, for the final round's pick.

1. ``--round screen``: full fine-tuning of SmolLM2-135M at a few learning rates for a fraction of
   an epoch (``--screen-steps``), scored on ``--screen-limit`` evenly spaced validation rows, one
   GGUF (q8_0), no ONNX: a grid search, `conf/search/b77_screen.yaml`.
2. ``--round final``: the screen's best ``--finalists`` learning rates (highest validation exact
   match) trained for ``--epochs`` on the whole train split, every cpu artifact, the whole
   validation split: a grid search, `conf/search/b77_final.yaml`; its pick (under the quality
   gate and `search.constraints`) and that pick's test exact match.

Both rounds run in one clone of this project (``--work``/project, made by the screen) with this
project's DVC cache, and share one budget (``--budget`` seconds from the screen's start): the final
round gets what the screen left (`slmake search --timeout`). The two rounds are separate
invocations so the final's epochs can be sized from the screen's measured step time.

    python benchmarks/search_banking77.py --round screen --work /tmp/b77 --budget 7200
    python benchmarks/search_banking77.py --round final --work /tmp/b77 --epochs 1 [--max-steps N]

Writes docs/figures/search_banking77.json (date, machine, CPU, commit, both rounds' trials, the
Pareto table's rows, the pick, its test figure) after the final round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import machine, record  # noqa: E402

GIT = ["git", "-c", "user.email=bench@slmake", "-c", "user.name=bench"]
MODEL = ROOT / ".venv/share/slmake/models/smollm2-135m"
# absolute: a trial runs in a temporary copy of the project (dvc exp run --temp), where conf's
# relative ../shared would point elsewhere
DATA = (ROOT / "../shared/datasets/banking77/train.csv").resolve()
FIXED = """      data: banking77
      data.source: {data}
      model: smollm2_135m_gguf
      model.hf.path: {model}
      train: full_fp32_cpu
"""
SCREEN = """# @package _global_
# BANKING77 screen (benchmarks/search_banking77.py): full fine-tuning, {steps} steps, learning rates,
# {limit} validation rows, q8_0 only.
hydra:
  sweeper:
    params:
{fixed}      train.max_steps: {steps}
      train.save_steps: 0
      train.lr: {lrs}
      eval.limit: {limit}
      bench.limit: {limit}
      targets.cpu.gguf.quants: "[q8_0]"
      targets.cpu.onnx_genai.precisions: "[]"
"""
FINAL = """# @package _global_
# BANKING77 final round (benchmarks/search_banking77.py): the screen's best learning rate(s), {epochs}
# epoch(s) of full fine-tuning on the whole train split (at most max_steps steps when > 0), the cpu
# artifacts {quants} + ONNX {onnx}, the whole validation split.
hydra:
  sweeper:
    params:
{fixed}      train.epochs: {epochs}
      train.max_steps: {max_steps}
      train.save_steps: 500
      train.lr: {lrs}
      targets.cpu.gguf.quants: "{quants}"
      targets.cpu.onnx_genai.precisions: "{onnx}"
"""


def run(cmd: list[str], cwd: Path, log: Path | None = None, env: dict | None = None) -> int:
    """Run ``cmd``, its output streamed to stdout (and appended to ``log``); returns the exit code."""
    env = {**os.environ, **(env or {})}
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        with open(log, "a", encoding="utf-8") if log else open(os.devnull, "w") as f:
            for line in p.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                f.write(line)
                f.flush()
    return p.returncode


def check(cmd: list[str], cwd: Path) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def commit_file(repo: Path, rel: str, text: str) -> str:
    (repo / rel).write_text(text)
    check(["git", "add", rel], repo)
    check([*GIT, "commit", "-qm", f"search: {rel}"], repo)
    return check(["git", "rev-parse", "HEAD"], repo).strip()


def trials(repo: Path, name: str) -> list[dict]:
    path = repo / ".slmake/search" / name / "trials.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.is_file() else []


def lr_of(rec: dict) -> str:
    return next(o.split("=", 1)[1] for o in rec["overrides"] if o.startswith("train.lr="))


def search(repo: Path, name: str, timeout: float) -> int:
    # the clone's own source: stages import slmake from here, whatever the project's checkout does meanwhile
    env = {"PYTHONPATH": str(repo / "src")}
    return run(["slmake", "search", name, "--timeout", f"{timeout:.0f}"], repo, repo.parent / f"{name}.log", env)


def screen(work: Path, args) -> None:
    repo = work / "project"
    if repo.exists():
        sys.exit(f"{repo} exists: the screen makes a new clone (remove it, or run --round final)")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    check(["git", "clone", "-q", str(ROOT), str(repo)], work)
    check(["dvc", "cache", "dir", "--local", str(ROOT / ".dvc/cache")], repo)
    check(["dvc", "checkout", "-q"], repo)
    fixed = FIXED.format(model=MODEL, data=DATA)
    text = SCREEN.format(fixed=fixed, steps=args.screen_steps, limit=args.screen_limit, lrs=args.lrs)
    base = commit_file(repo, "conf/search/b77_screen.yaml", text)
    state = {"start": t0, "budget": args.budget, "screen_baseline": base, "machine": machine(),
             "screen_file": text}
    (work / "state.json").write_text(json.dumps(state, indent=1))
    m = state["machine"]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {m['machine']}; {m['cpu']}; baseline {base[:7]}",
          flush=True)
    code = search(repo, "b77_screen", args.budget - (time.time() - t0))
    state["screen_s"] = round(time.time() - t0, 1)
    (work / "state.json").write_text(json.dumps(state, indent=1))
    for r in trials(repo, "b77_screen"):
        print(f"screen trial {r['trial']}: lr {lr_of(r)} {r['status']} val {r.get('values')} {r.get('seconds')} s "
              f"ran {r.get('stages_run')}")
    print(f"screen: exit {code}, {state['screen_s']:.0f} s of the {args.budget:.0f} s budget")


def final(work: Path, args) -> None:
    repo = work / "project"
    state = json.loads((work / "state.json").read_text())
    done = [r for r in trials(repo, "b77_screen") if r["status"] == "ok"]
    if not done:
        sys.exit("the screen has no finished trial")
    ranked = sorted(done, key=lambda r: -r["values"]["val_exact_match"])  # validation only
    lrs = [lr_of(r) for r in ranked[:args.finalists]]
    text = FINAL.format(fixed=FIXED.format(model=MODEL, data=DATA), epochs=args.epochs, max_steps=args.max_steps,
                        lrs=",".join(lrs), quants=args.quants, onnx=args.onnx)
    state["final_baseline"] = commit_file(repo, "conf/search/b77_final.yaml", text)
    state["final_file"] = text
    left = state["budget"] - (time.time() - state["start"])
    print(f"final round: lr {lrs}, {args.epochs} epoch(s), max_steps {args.max_steps}, {left:.0f} s of the budget "
          "left", flush=True)
    t1 = time.time()
    code = search(repo, "b77_final", left)
    total = time.time() - state["start"]
    summary = repo / "reports/search/b77_final.md"
    summary = summary.read_text() if summary.is_file() else ""
    pick = next((ln for ln in summary.splitlines() if "Pick:" in ln), None)
    test = next((ln for ln in summary.splitlines() if "Test split exact match" in ln), None)
    rows = []
    for name in ("b77_screen", "b77_final"):
        for r in trials(repo, name):
            rows.append({"round": name.split("_")[1], "experiment": r["experiment"], "lr": lr_of(r),
                         "status": r["status"], "reason": r.get("reason"), "seconds": r.get("seconds"),
                         "best artifact": r.get("best"), "validation": r.get("values"),
                         "artifacts": [{k: a.get(k) for k in ("artifact", "val_exact_match", "size_mb", "decode_tok_s",
                                                               "delta", "delta_low", "refused")}
                                       for a in r.get("rows", [])]})
    figures = {"budget s": state["budget"], "screen s": state.get("screen_s"), "final s": round(time.time() - t1, 1),
               "total s": round(total, 1), "final exit": code, "pick": pick, "test exact match of the pick": test,
               "before (README, LoRA 300 steps)": 0.779, "goal": ">= 0.90", "trials": rows,
               "baselines": {"screen": state["screen_baseline"][:7], "final": state["final_baseline"][:7]},
               "search files": {"screen": state["screen_file"], "final": state["final_file"]}}
    record("search_banking77", figures, title="slmake search on BANKING77 (SmolLM2-135M): the best artifact "
           f"within {state['budget'] / 3600:g} h, screen then final round",
           notes="Decisions read the validation split only; the test figure is the final round's pick, read once. "
           "Trials run one at a time with every core.")
    print(summary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--round", choices=("screen", "final"), required=True)
    ap.add_argument("--work", type=Path, required=True, help="folder for the clone and the logs")
    ap.add_argument("--budget", type=float, default=7200, help="seconds for both rounds (screen)")
    ap.add_argument("--lrs", default="0.0001,0.0002,0.0004", help="screen: learning rates (full fine-tuning)")
    ap.add_argument("--screen-steps", type=int, default=200)
    ap.add_argument("--screen-limit", type=int, default=300, help="screen: validation (and test) rows scored")
    ap.add_argument("--epochs", type=int, default=2, help="final: epochs on the whole train split")
    ap.add_argument("--max-steps", type=int, default=-1,
                    help="final: at most this many steps (> 0 overrides --epochs; size it from the screen's step time)")
    ap.add_argument("--quants", default="[f16,q8_0,q4_k_m]", help="final: the cpu target's GGUF quants")
    ap.add_argument("--onnx", default="[int4]", help="final: the cpu target's ONNX precisions ([] for none)")
    ap.add_argument("--finalists", type=int, default=1, help="final: how many of the screen's best learning rates")
    args = ap.parse_args()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # dvc, slmake
    if not (MODEL / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file():
        sys.exit(f"{MODEL}: missing (./install.sh fetches it)")
    (screen if args.round == "screen" else final)(args.work.resolve(), args)


if __name__ == "__main__":
    main()
