"""Base -> fine-tuned accuracy of every training path on one task: LoRA, full fine-tuning and
distillation, each built by `dvc repro evaluate` in one copy of the project, one after another,
so DVC reuses what it can (full FT reruns only train and evaluate; no stage is built twice).

    python benchmarks/training_paths.py [--model default|smollm2] [--keep DIR] [--lock FILE]
                                        [--labelled N] [--raw-limit N] [--full-lr LR] [--lora-build DIR]
                                        [-S key=value ...]

(a) LoRA: the spec as shipped (or the SmolLM2 overrides). Its fine-tuned model is the teacher of (c).
    --lora-build DIR takes it from a finished build of the same spec (its splits must be byte-equal).
(b) Full FT: `train=full_fp32_cpu`, lr 2e-4. SmolLM2: 1e-4 (--full-lr), the shipped specs' 10x
    LoRA:full ratio (2e-3:2e-4) applied to its LoRA lr 1e-3; the top of the usual 5e-5..1e-4 for a
    pretrained ~100M model, since it gets one epoch (~200 steps).
(c) Distillation: (a)'s merged model, converted to an f16 GGUF with llama.cpp's converter, labels the
    inputs of (a)'s train split (responses dropped); the labelled set is N rows of (a)'s val split,
    which the teacher never trained on, so its ceiling is measured on unseen rows. The student trains
    on the accepted teacher labels + the labelled set. THE REVIEW IS ACCEPTED PROGRAMMATICALLY here
    (every row "yes"); a real user reviews the sample. The student is scored on (a)'s test split
    (true labels, same rows as (a) and (b)), beside its own evaluate stage (a test split of labelled
    and teacher-labelled rows).

--lock FILE wraps each heavy step (one `dvc repro`, the conversion, the scoring) in `flock FILE`,
so a shared machine's other jobs can run between them. A failing stage stops the script with the
tail of that stage's output.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record, variant_of
from pipeline import copy_project
from stage_times import timed_repro

BIN = Path(sys.executable).parent
SMOLLM2 = {"model": "smollm2_135m_gguf", "model.hf.path": str(BIN.parent / "share/slmake/models/smollm2-135m"),
           "train.epochs": "1", "train.threads": "2", "train.lr": "0.001"}
CONVERTER = BIN.parent / "share/slmake/llama.cpp/convert_hf_to_gguf.py"


class Project:
    """The copy: compose a spec, run heavy commands (under the lock), stream `dvc repro`."""

    def __init__(self, work: Path, lock: str | None, base: dict[str, str]):
        self.work, self.lock, self.base = work, lock, base
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(work / "src"),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        (work / "logs").mkdir(exist_ok=True)

    def run(self, cmd: list[str], heavy: bool = False) -> str:
        if heavy and self.lock:
            cmd = ["flock", self.lock, *cmd]
        res = subprocess.run(cmd, cwd=self.work, env=self.env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            sys.exit(f"`{' '.join(cmd)}` failed (rc {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res.stdout

    def spec(self, **extra: str) -> None:
        """params.yaml from conf/ + the model's overrides + this path's (later keys win)."""
        over = {**self.base, **extra}
        self.run([str(BIN / "slmake"), "check", "--write", "params.yaml", *(f"{k}={v}" for k, v in over.items())])

    def repro(self, label: str, target: str = "evaluate") -> dict[str, float]:
        """`dvc repro target`, streamed to logs/<label>.log; {stage: seconds}. On failure: the
        failing stage's output tail, and exit."""
        cmd = ["dvc", "repro", target]
        if self.lock:
            cmd = ["flock", self.lock, *cmd]
        print(f"[{label}] {' '.join(cmd)}", flush=True)
        times, _ = timed_repro(self.work, self.env, self.work / f"logs/{label}.log", tuple(cmd))
        return dict(times)

    def json(self, rel: str) -> dict:
        return json.loads((self.work / rel).read_text())


def split_lines(p: Project, source: str) -> dict[str, list[int]]:
    """(a)'s split of each kept source line, from the curation ledger: {split: [line, ...]}."""
    out: dict[str, list[int]] = {}
    with open(p.work / "reports/curation_ledger.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["source"] == source and r["fate"] == "kept":
                out.setdefault(r["split"], []).append(int(r["line"]))
    return out


def distill_data(p: Project, lines: dict[str, list[int]], data: dict, n_labelled: int) -> list[str]:
    """data/distill/labelled.jsonl (n rows of (a)'s val split, evenly spaced) and inputs.jsonl
    ((a)'s train inputs, no responses); returns the inputs' true responses, line by line."""
    rows = (p.work / data["source"]).read_text(encoding="utf-8").splitlines()
    text, resp = data["columns"]["instruction"], data["columns"]["response"]
    val = lines["val"]
    if n_labelled > len(val):
        sys.exit(f"--labelled {n_labelled}: (a)'s val split has only {len(val)} rows")
    pick = [val[i * len(val) // n_labelled] for i in range(n_labelled)]
    d = p.work / "data/distill"
    d.mkdir(parents=True, exist_ok=True)
    (d / "labelled.jsonl").write_text("".join(rows[i - 1] + "\n" for i in pick), encoding="utf-8")
    raw = [json.loads(rows[i - 1]) for i in lines["train"]]
    (d / "inputs.jsonl").write_text("".join(json.dumps({text: r[text]}, ensure_ascii=False) + "\n"
                                            for r in raw), encoding="utf-8")
    return [r[resp] for r in raw]


def accept_review(p: Project, review_path: str) -> int:
    """Mark every row of the review sample yes -- a stand-in for the human reviewer -- and save the
    copy where curate's gate looks. Returns the sample size."""
    with open(p.work / "build/distill/review_sample.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["accept"], r["note"] = "yes", "accepted programmatically by benchmarks/training_paths.py"
    with open(p.work / review_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def label_accuracy(p: Project, truth: list[str]) -> tuple[int, int]:
    """How many teacher labels equal the input's true response (the teacher trained on these
    inputs); each label names its inputs.jsonl line."""
    hit = n = 0
    for line in (p.work / "build/distill/labelled.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        want = truth[int(r["distill_line"].rsplit(":", 1)[1]) - 1]
        n += 1
        hit += json.loads(want) == json.loads(r["response"])
    return hit, n


def score(test: Path, folders: list[str]) -> None:
    """(Run inside the copy, PYTHONPATH=<copy>/src.) Each model folder's metrics on `test`'s rows,
    with evaluate's own code and settings (eval.*), as JSON on stdout's last line."""
    from slmake import process_setup
    from slmake.checks import stage_params

    params = stage_params("eval", "data", "seed")
    ev = params["eval"]
    process_setup.setup(threads=ev["threads"], seed=params["seed"])
    from slmake.base_model import load_tokenizer
    from slmake.evaluate import encode_prompts, evaluate_model
    from slmake.io import read_jsonl

    tok = load_tokenizer(Path("build/train/merged"))
    rows = read_jsonl(test)
    prompts = encode_prompts(tok, rows)
    out = {}
    for folder in folders:
        out[folder], _, _ = evaluate_model(Path(folder), tok, rows, prompts, ev["max_new_tokens"],
                                           params["data"]["response_schema"], desc=f"score {folder}",
                                           batch_size=ev["batch_size"])
    print(json.dumps(out))


def tuned_path(p: Project, label: str, name: str, **spec: str) -> dict:
    """One fine-tuning path on the spec's own data: its row of the table."""
    p.spec(**spec)
    times = p.repro(label)
    ev = p.json("reports/evaluate.json")
    return {"path": name, "base": ev["base"]["exact_match"], "ft": ev["finetuned"]["exact_match"],
            "n": ev["finetuned"]["n"], "ceiling": None, "train_s": times.get("train", 0.0)}


def reused_lora(p: Project, build: Path) -> dict:
    """(a) from an earlier build of the same spec (--lora-build): curate and base run here, and
    its splits must be byte-equal to ours, so its test accuracy is on the same rows."""
    p.repro("lora_reused", target="base")
    for split in ("train", "val", "test"):
        if (build / f"build/data/{split}.jsonl").read_bytes() != (p.work / f"build/data/{split}.jsonl").read_bytes():
            sys.exit(f"--lora-build {build}: build/data/{split}.jsonl differs from this spec's; it is not a "
                     "build of the same data and code: drop --lora-build to train LoRA here")
    ev = json.loads((build / "reports/evaluate.json").read_text())
    return {"path": f"LoRA (reused: {build})", "base": ev["base"]["exact_match"], "ft": ev["finetuned"]["exact_match"],
            "n": ev["finetuned"]["n"], "ceiling": None, "train_s": None}


def distill_path(p: Project, data: dict, lines: dict[str, list[int]], test: Path, n_labelled: int,
                 raw_limit: int | None) -> tuple[dict, list[str]]:
    """(c): models/teacher.gguf labels (a)'s train inputs, the review is accepted programmatically,
    the student trains; it is scored on (a)'s test split. Its row, and the notes under the table."""
    truth = distill_data(p, lines, data, n_labelled)
    spec = {"distill": "gguf_teacher", "distill.teacher.path": "models/teacher.gguf", "distill.few_shot": "0",
            "distill.labelled": "data/distill/labelled.jsonl", "distill.inputs.path": "data/distill/inputs.jsonl",
            "data.source": "data/distill/labelled.jsonl", "data.negatives.on_violation": "warn"}
    if raw_limit:
        spec["distill.limit"] = str(raw_limit)
    p.spec(**spec)
    t_label = p.repro("distill_label", target="distill").get("distill", 0.0)
    info = p.json("build/distill/teacher.json")
    if not info["labelled"]:
        sys.exit(f"[distill] the teacher labelled none of {info['inputs']['read']} inputs (quarantined: "
                 f"{info['quarantine_reasons']}); see {p.work}/build/distill/quarantine.jsonl")
    n_review = accept_review(p, yaml.safe_load((p.work / "params.yaml").read_text())["distill"]["review"]["path"])
    times = p.repro("distill_student")
    own = p.json("reports/evaluate.json")
    out = p.run([sys.executable, str(Path(__file__).resolve()), "--score", str(test),
                 "build/base", "build/train/merged"], heavy=True)
    scored = json.loads(out.strip().splitlines()[-1])
    ceiling, cur = info["ceiling"], p.json("reports/curation.json")
    hit, n_lab = label_accuracy(p, truth)
    row = {"path": "distillation (student)", "base": scored["build/base"]["exact_match"],
           "ft": scored["build/train/merged"]["exact_match"], "n": scored["build/train/merged"]["n"],
           "ceiling": ceiling["exact_match"], "train_s": times.get("train", 0.0)}
    notes = [
        (f"teacher = (a)'s LoRA model as an f16 GGUF (llama.cpp), zero-shot; ceiling {ceiling['exact_match']:.3f} "
         f"(valid {ceiling['valid']:.3f}) on {ceiling['n']} labelled rows of (a)'s val split, unseen in its training."),
        (f"teacher labels: {info['inputs']['read']} inputs of (a)'s train split, {info['labelled']} labelled, "
         f"{info['quarantined']} quarantined {info['quarantine_reasons'] or ''}; {info['seconds']:.0f} s (distill stage "
         f"{t_label:.0f} s); {hit}/{n_lab} equal the true label (the teacher trained on these inputs)."),
        (f"review: the {n_review}-row sample was ACCEPTED PROGRAMMATICALLY (every row yes) by this script; "
         "a real user reviews it before training."),
        (f"student data: {cur['input']} records ({n_labelled} labelled + {cur['distill']['labels_to_curate']} teacher "
         f"labels) curated; warnings: {cur.get('warnings') or 'none'}"),
        (f"student on its own test split (labelled + teacher-labelled rows): base {own['base']['exact_match']:.3f} "
         f"-> {own['finetuned']['exact_match']:.3f} (n={own['finetuned']['n']})"),
    ]
    return row, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["default", "smollm2"], default="default")
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temp dir)")
    ap.add_argument("--lock", help="flock this file around each heavy step (a shared machine)")
    ap.add_argument("--labelled", type=int, default=100, help="labelled rows for distillation (from (a)'s val split)")
    ap.add_argument("--raw-limit", type=int, help="label at most N raw inputs (distill.limit; default: all)")
    ap.add_argument("--full-lr", help="full fine-tuning lr (default: full_fp32_cpu's 2e-4; SmolLM2: 1e-4)")
    ap.add_argument("--lora-build", type=Path, help="take (a) from this finished build of the same spec "
                    "(its reports/evaluate.json and build/train/merged) instead of training LoRA again")
    ap.add_argument("-S", dest="overrides", action="append", default=[],
                    help="spec override for every path (Hydra syntax), after the model's")
    ap.add_argument("--score", nargs="+", help=argparse.SUPPRESS)   # internal: score TEST FOLDER...
    args = ap.parse_args()
    if args.score:
        return score(Path(args.score[0]), args.score[1:])

    work = args.keep or Path(tempfile.mkdtemp(prefix="slmake_paths_"))
    work.mkdir(parents=True, exist_ok=True)
    copy_project(work)
    base = {**(SMOLLM2 if args.model == "smollm2" else {}), **dict(o.split("=", 1) for o in args.overrides)}
    p = Project(work, args.lock, base)
    p.spec()
    p.run(["sh", "-c", "git init -q && git add -A && git -c user.email=b@b -c user.name=b commit -qm paths"])

    # (a) LoRA; its model becomes the teacher (an f16 GGUF, as the cpu target converts it)
    if args.lora_build:
        rows = [reused_lora(p, args.lora_build)]
        merged = args.lora_build / "build/train/merged"
    else:
        rows, merged = [tuned_path(p, "lora", "LoRA")], Path("build/train/merged")
    test = work / "paths/test.jsonl"
    test.parent.mkdir(exist_ok=True)
    shutil.copy2(work / "build/data/test.jsonl", test)
    (work / "models").mkdir(exist_ok=True)
    p.run([sys.executable, str(CONVERTER), str(merged), "--outtype", "f16", "--outfile", "models/teacher.gguf"],
          heavy=True)
    data = yaml.safe_load((work / "params.yaml").read_text())["data"]
    lines = split_lines(p, data["source"])

    # (b) full fine-tuning: same data and base, so only train and evaluate rerun
    lr = args.full_lr or ("1e-4" if args.model == "smollm2" else None)
    full = {"train": "full_fp32_cpu", **({"train.lr": lr} if lr else {})}
    rows.append(tuned_path(p, "full", "full FT", **full))
    rows[-1]["path"] += f" (lr {yaml.safe_load((work / 'params.yaml').read_text())['train']['lr']:g})"

    # (c) distillation from (a)'s model
    row, notes = distill_path(p, data, lines, test, args.labelled, args.raw_limit)
    rows.append(row)

    print(f"\ntraining paths, model={args.model} ({work})")
    print(f"{'path':<34} {'base acc':>8} {'fine-tuned acc':>14} {'n':>4} {'teacher ceiling':>15} {'train wall s':>12}")
    for r in rows:
        c = "" if r["ceiling"] is None else f"{r['ceiling']:.3f}"
        t = "reused" if r["train_s"] is None else f"{r['train_s']:.1f}"
        print(f"{r['path']:<34} {r['base']:8.3f} {r['ft']:14.3f} {r['n']:4d} {c:>15} {t:>12}")
    print(f"\nfine-tuned acc: exact match of the whole JSON on (a)'s held-out test split, the same {rows[0]['n']} rows "
          f"for every path; the teacher's own test acc is (a)'s, {rows[0]['ft']:.3f}.")
    print("\n".join(notes))
    paths = [{"path": r["path"], "base": r["base"], "fine-tuned": r["ft"], "n": r["n"],
              "teacher ceiling": r["ceiling"], "train s": r["train_s"]} for r in rows]
    record("training_paths", {"paths": paths}, notes="\n".join(notes),
           variant=variant_of(f"{k}={v}" for k, v in base.items()))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
