"""2-process data-parallel training vs 1 process: wall time and final loss of the train stage at
the same global batch and the same cores (1 process x T threads vs 2 processes x T/2 threads, gloo).

    python benchmarks/ddp.py [--steps 100] [--threads 2] [--method lora|full] [--keep DIR]

Builds the micro project (tests/e2e_utils.MICRO: 700 IT tickets, a 2-layer scratch Llama) up to
`base`, then runs `stages/train.py` twice; prints one line per run and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record  # noqa: E402


def _run(repo: Path, overrides: list[str]) -> dict:
    from e2e_utils import sh

    sh("slmake check --write params.yaml " + " ".join(overrides), repo)
    t0 = time.perf_counter()
    sh("PYTHONHASHSEED=0 python stages/train.py", repo)
    wall = time.perf_counter() - t0
    summary = json.loads((repo / "reports/train/summary.json").read_text())
    rows = (repo / "reports/train/plots/metrics/train/loss.tsv").read_text().split("\n")[1:]
    last = [r.split("\t") for r in rows if r][-1]
    return {"wall_s": round(wall, 1), "last_logged_loss": round(float(last[1]), 4), "at_step": int(last[0]), **summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2, help="cores in all: 1 process gets them all, 2 get half each")
    ap.add_argument("--batch", type=int, default=8, help="global batch")
    ap.add_argument("--method", default="lora", choices=["lora", "full"])
    ap.add_argument("--keep", help="build in this folder (kept) instead of a temp one")
    a = ap.parse_args()
    bin_dir = str(Path(sys.executable).parent)
    import os

    os.environ["PATH"] = bin_dir + os.pathsep + os.environ["PATH"]
    from e2e_utils import MICRO, make_project, sh

    repo = Path(a.keep or tempfile.mkdtemp(prefix="slmake_ddp_"))
    if not (repo / "build/base").is_dir():
        (repo / "data").mkdir(parents=True, exist_ok=True)
        lines = (ROOT / "data/it_tickets/tickets.jsonl").read_text().splitlines()[:700]
        (repo / "data/micro.jsonl").write_text("\n".join(lines) + "\n")
        spec = json.loads(json.dumps(MICRO))
        spec["train"].update(save_steps=0)
        if a.method == "full":  # the full_fp32_cpu option with the micro budget
            spec["train"] = {"max_steps": spec["train"]["max_steps"], "save_steps": 0}
        make_project(repo, spec, {"train": "full_fp32_cpu"} if a.method == "full" else None)
        sh("dvc repro base", repo)
    common = [f"train.max_steps={a.steps}"]
    one = _run(repo, common + ["train.processes=1", f"train.threads={a.threads}", f"train.batch_size={a.batch}"])
    print(f"1 process  x {a.threads} threads, batch {a.batch}:     {one}", flush=True)
    two = _run(repo, common + ["train.processes=2", f"train.threads={max(1, a.threads // 2)}",
                               f"train.batch_size={a.batch // 2}"])
    print(f"2 processes x {max(1, a.threads // 2)} thread(s), batch 2 x {a.batch // 2}: {two}")
    print(f"wall time 2-process / 1-process: {two['wall_s'] / one['wall_s']:.2f}; "
          f"final train_loss {one['train_loss']} vs {two['train_loss']}, val_loss {one.get('val_loss')} vs "
          f"{two.get('val_loss')} (method {a.method}, {a.steps} steps, project {repo})")
    runs = [{"run": f"1 process x {a.threads} threads, batch {a.batch}", **one},
            {"run": f"2 processes x {max(1, a.threads // 2)} thread(s), batch 2 x {a.batch // 2}", **two}]
    record("ddp", {"runs": runs, "wall ratio 2 / 1": round(two["wall_s"] / one["wall_s"], 2),
                   "steps": a.steps, "method": a.method}, variant=None if a.method == "lora" else a.method)


if __name__ == "__main__":
    main()
