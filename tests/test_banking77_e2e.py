"""A real public dataset through the real pipeline: Banking77 (CSV text,category; 77 intents).

Small training budget: the point is that curation, training and evaluation work on data slmake did
not write, and that the fine-tuned model learns the task (the published fine-tuned BERT reaches
~93.7 % test accuracy; a 1M-parameter model trained from scratch for a few hundred steps does not).
"""

import json

import pytest

from e2e_utils import ROOT, make_project, sh

pytestmark = pytest.mark.e2e
BANKING77 = ROOT.parent / "shared/datasets/banking77/train.csv"

SMALL = {
    "model": {"scratch": {"vocab_size": 768, "hidden_size": 128, "intermediate_size": 256, "num_layers": 2,
                          "num_heads": 2, "num_kv_heads": 2,
                          "pretrain": {"steps": 300, "batch_size": 8, "block_size": 64, "lr": 0.003, "threads": 2}}},
    "data": {"source": str(BANKING77)},
    "train": {"max_steps": 250, "batch_size": 16, "lr": 0.004, "threads": 2, "lora": {"r": 16, "alpha": 32}},
    "eval": {"limit": 60, "max_new_tokens": 12},
}


@pytest.mark.skipif(not BANKING77.exists(), reason=f"{BANKING77} not found (../shared/datasets)")
def test_banking77_curates_trains_and_beats_base(tmp_path):
    repo = make_project(tmp_path / "b77", SMALL, defaults={"data": "banking77"})
    sh("dvc repro evaluate", repo)
    curation = json.loads((repo / "reports/curation.json").read_text())
    assert curation["input"] == 10003
    assert curation["kept"] + curation["dropped_total"] + curation["quarantined_total"] == curation["input"]
    assert curation["leakage"]["ok"] and curation["leakage"]["pairs"]["train_test"] == {"exact": 0, "near": 0}
    ev = json.loads((repo / "reports/evaluate.json").read_text())
    print(f"\nBanking77 (small budget): base accuracy {ev['base']['exact_match']:.3f}, fine-tuned "
          f"{ev['finetuned']['exact_match']:.3f} (valid label {ev['finetuned']['valid']:.3f}) on "
          f"{ev['finetuned']['n']} test rows; published fine-tuned BERT: 0.937")
    assert ev["finetuned"]["valid"] > ev["base"]["valid"]
    assert ev["finetuned"]["exact_match"] > ev["base"]["exact_match"]
