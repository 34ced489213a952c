"""DVC reruns curation when any data source changes, however many `data.source` lists: the check
stage hashes every source into build/check.data.json, which curate depends on (dvc.yaml cannot list
a variable number of deps).  Only the check and curate stages run here (seconds, not minutes)."""

from __future__ import annotations

import json

import pytest

from e2e_utils import ROOT, make_project, ran_stages, sh

pytestmark = pytest.mark.e2e


def test_feedback_source_is_a_curate_dependency(tmp_path):
    repo = tmp_path / "p"
    (repo / "data").mkdir(parents=True)
    lines = (ROOT / "data/it_tickets/tickets.jsonl").read_text().splitlines()[:300]
    (repo / "data/micro.jsonl").write_text("\n".join(lines) + "\n")
    make_project(repo, {"data": {"source": "data/micro.jsonl"}})  # one string, as before
    assert ran_stages(sh("dvc repro curate", repo).stdout) == {"distill", "curate"}  # distill: off, a constant
    assert ran_stages(sh("dvc repro curate", repo).stdout) == set()

    # a feedback file (corrected responses, same shape) as a second source, the way a user adds it
    fb = repo / "data/feedback.jsonl"
    fb.write_text("".join(json.dumps({"ticket": json.loads(l)["ticket"] + " -- still broken after the fix",
                                      "response": json.loads(l)["response"]}) + "\n" for l in lines[:5]))
    out = sh("dvc exp run -S 'data.source=[data/micro.jsonl,{path:data/feedback.jsonl,origin:feedback}]' curate",
             repo).stdout
    assert ran_stages(out) == {"curate"}
    ledger = (repo / "reports/curation_ledger.csv").read_text().splitlines()
    origins = [row.split(",")[0] for row in ledger[1:]]
    assert origins.count("data/micro.jsonl") == 300 and origins.count("feedback") == 5
    assert ran_stages(sh("dvc repro curate", repo).stdout) == set()

    with open(fb, "a") as f:  # the feedback file grows: curation reruns, nothing else changed
        f.write(json.dumps({"ticket": "printer on floor 3 jams on every page", "response": json.loads(lines[0])["response"]})
                + "\n")
    assert ran_stages(sh("dvc repro curate", repo).stdout) == {"curate"}
    assert json.loads((repo / "reports/curation.json").read_text())["sources"][1] | {"sha256": ""} == {
        "path": "feedback", "format": "jsonl", "records": 6, "sha256": ""}
    fb.touch()  # same bytes: nothing to do
    assert ran_stages(sh("dvc repro curate", repo).stdout) == set()
