"""Distillation end to end, offline: the micro build's fine-tuned model (its f16 GGUF, through
llama.cpp) teaches a smaller scratch student. `dvc repro` labels raw tickets and stops before
training until the review is in; the test reviews the sample (accepting a label when it is the
ticket's true label), and the next `dvc repro` reruns curate -- not the teacher -- then base, train
and evaluate on the accepted labels, which the ledger names by origin."""

from __future__ import annotations

import csv
import json
import time

import pytest

from e2e_utils import ROOT, make_project, ran_stages, sh
from slmake.data.normalize import normalize
from test_distill import read_csv

pytestmark = pytest.mark.e2e
TRUTH: dict[str, dict] = {}   # normalised input -> its true label (what the simulated reviewer knows)

TICKETS = (ROOT / "data/it_tickets/tickets.jsonl").read_text().splitlines()
STUDENT = {   # smaller than the micro teacher (hidden 128): hidden 64
    "model": {"scratch": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_layers": 2,
                          "num_heads": 2, "num_kv_heads": 2,
                          "pretrain": {"steps": 150, "batch_size": 8, "block_size": 64, "lr": 0.005, "threads": None}}},
    # the micro teacher rarely says refuse/escalate: curation's negatives rule warns (fails by default)
    "data": {"source": "data/gold.jsonl", "negatives": {"on_violation": "warn"}},
    "train": {"max_steps": 150, "batch_size": 8, "lr": 0.01, "threads": None, "lora": {"r": 8, "alpha": 16}},
    "eval": {"limit": 40, "threads": None, "max_new_tokens": 48},
    "distill": {"inputs": {"path": "data/raw.jsonl"}, "labelled": "data/gold.jsonl", "few_shot": 1,
                "ceiling_limit": 60, "teacher": {"threads": None, "max_new_tokens": 40},
                "review": {"sample_size": 20, "min_accept": 0.5}},
}


def review(repo, rows, ok) -> None:
    """Fill `accept` (ok(teacher's label, true label)) and save the reviewed copy where the gate looks."""
    for r in rows:
        r["accept"] = "yes" if ok(json.loads(r["teacher_output"]), TRUTH[r["input"]]) else "no"
    with open(repo / "data/distill_review.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_distill_review_curate_train(micro_repo, tmp_path):
    teacher = micro_repo / "build/compile/cpu/gguf_f16/model.gguf"
    repo = tmp_path / "student"
    (repo / "data").mkdir(parents=True)
    gold, raw = TICKETS[700:850], TICKETS[850:1150]           # neither seen by the teacher (tickets[:700])
    (repo / "data/gold.jsonl").write_text("\n".join(gold) + "\n")
    (repo / "data/raw.jsonl").write_text("\n".join(json.dumps({"ticket": json.loads(l)["ticket"]}) for l in raw) + "\n")
    TRUTH.update({normalize(json.loads(l)["ticket"]): json.loads(json.loads(l)["response"]) for l in raw})
    spec = json.loads(json.dumps(STUDENT))
    spec["distill"]["teacher"]["path"] = str(teacher)
    make_project(repo, spec, defaults={"distill": "gguf_teacher"})

    t0 = time.perf_counter()
    first = sh("dvc repro evaluate", repo, check=False)
    t_distill = time.perf_counter() - t0
    assert first.returncode != 0
    err = first.stderr
    assert "slmake curate: data/distill_review.csv: not found. Training is refused" in err, err[-2000:]
    assert "copy build/distill/review_sample.csv to data/distill_review.csv" in err
    assert not (repo / "build/train").exists() and "Running stage 'base'" not in first.stdout
    info = json.loads((repo / "build/distill/teacher.json").read_text())
    assert info["ceiling"]["n"] == 60 and info["inputs"]["read"] == 300
    assert info["inputs"]["labelled"] + info["inputs"]["quarantined"] + info["inputs"]["duplicate"] \
        + info["inputs"]["already_labelled"] == 300

    # a strict reviewer (the whole label must be the ticket's true one): the micro teacher is weak,
    # so training is refused with the acceptance rate
    rows = read_csv(repo / "build/distill/review_sample.csv")
    review(repo, rows, lambda got, want: got == want)
    low = sh("dvc repro evaluate", repo, check=False)
    assert low.returncode != 0 and "below distill.review.min_accept=0.5" in low.stderr, low.stderr[-2000:]
    assert "Running stage 'distill'" not in low.stdout and not (repo / "build/train").exists()
    strict = sum(r["accept"] == "yes" for r in rows)
    # a reviewer who checks the decision that matters most here (resolve / escalate / refuse)
    review(repo, rows, lambda got, want: got["action"] == want["action"])
    accepted = sum(r["accept"] == "yes" for r in rows)

    t0 = time.perf_counter()
    second = sh("dvc repro evaluate", repo)
    t_train = time.perf_counter() - t0
    assert ran_stages(second.stdout) == {"curate", "base", "train", "evaluate"}, second.stdout  # not the teacher
    curation = json.loads((repo / "reports/curation.json").read_text())
    d = curation["distill"]
    assert (d["review"]["accepted"], d["review"]["sample"]) == (accepted, len(rows))
    rejected = {r["id"] for r in rows if r["accept"] == "no"}
    n_labels = info["inputs"]["labelled"]
    assert d["labels_to_curate"] == n_labels - len(rejected)
    ledger = read_csv(repo / "reports/curation_ledger.csv")
    origins = {r["source"] for r in ledger}
    assert origins == {"data/gold.jsonl", "distill:model.gguf"}
    assert sum(r["source"] == "distill:model.gguf" for r in ledger) == d["labels_to_curate"]
    assert curation["input"] == len(gold) + d["labels_to_curate"]
    assert any("negative examples" in w for w in curation["warnings"])   # curation rules apply to them
    student = json.loads((repo / "reports/evaluate.json").read_text())
    print(f"\ndistill e2e: teacher ceiling exact {info['ceiling']['exact_match']:.3f} (n={info['ceiling']['n']}), "
          f"student base {student['base']['exact_match']:.3f} -> fine-tuned {student['finetuned']['exact_match']:.3f} "
          f"(n={student['finetuned']['n']}); review: strict {strict}/{len(rows)} (refused), action-only {accepted}/{len(rows)}; quarantined "
          f"{info['quarantined']} {info['quarantine_reasons']}; labels {n_labels}; "
          f"repro 1 (distill) {t_distill:.0f} s, repro 2 (curate..evaluate) {t_train:.0f} s")
    # decoded as served, both are valid (the grammar); decoded freely, only the student learnt the format
    assert student["finetuned"]["valid_free"] > student["base"]["valid_free"]


def test_hf_and_gguf_teachers_agree(micro_repo, tmp_path):
    """The same fine-tuned model as a transformers folder (fp32) and as its f16 GGUF (llama.cpp,
    its own tokenizer): the teacher's labels and its ceiling come out (nearly) the same."""
    import yaml

    from slmake.distill.label import run

    data = yaml.safe_load((ROOT / "conf/data/it_tickets.yaml").read_text())
    (tmp_path / "gold.jsonl").write_text("\n".join(TICKETS[700:730]) + "\n")
    (tmp_path / "raw.jsonl").write_text("\n".join(json.dumps({"ticket": json.loads(l)["ticket"]})
                                                  for l in TICKETS[730:750]) + "\n")
    base = yaml.safe_load((ROOT / "conf/distill/gguf_teacher.yaml").read_text())
    base.update(inputs={"path": str(tmp_path / "raw.jsonl"), "format": "auto", "column": None},
                labelled=str(tmp_path / "gold.jsonl"), few_shot=0)
    runs = {}
    for kind, path in (("hf", micro_repo / "build/train/merged"),
                       ("gguf", micro_repo / "build/compile/cpu/gguf_f16/model.gguf")):
        cfg = json.loads(json.dumps(base))
        cfg["teacher"].update(kind=kind, path=str(path), threads=None, max_new_tokens=32)
        runs[kind] = run(cfg, data, tmp_path / kind)
    hf, gguf = runs["hf"], runs["gguf"]
    assert hf["ceiling"]["n"] == gguf["ceiling"]["n"] == 30 and hf["inputs"]["read"] == 20
    same = sum(a == b for a, b in zip((tmp_path / "hf/ceiling.jsonl").read_text().splitlines(),
                                      (tmp_path / "gguf/ceiling.jsonl").read_text().splitlines()))
    assert same >= 27, f"{same}/30 ceiling rows agree"
    assert abs(hf["ceiling"]["exact_match"] - gguf["ceiling"]["exact_match"]) <= 0.1
    print(f"\nteachers: hf ceiling {hf['ceiling']['exact_match']:.3f}, gguf f16 {gguf['ceiling']['exact_match']:.3f}, "
          f"{same}/30 outputs identical")
