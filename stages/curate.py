"""curate: raw data + data.* -> build/data/{train,val,test}.jsonl, reports/curation.json (counts),
reports/curation_ledger.csv (one row per input record), reports/curation_quarantine.jsonl
(malformed records), reports/data_card.md"""

import json
import sys
from pathlib import Path

from slmake.chat_template import ChatTemplateError, resolved
from slmake.checks import stage_params
from slmake.data.curate import CurationError, run_curation
from slmake.distill.gate import GateError, curate_input, message
from slmake.io import remove_litter, write_text_atomic

params = stage_params("data", "distill")
OUTS = ("build/data", "reports/curation.json", "reports/curation_ledger.csv", "reports/curation_quarantine.jsonl",
        "reports/data_card.md")
for out in OUTS:  # temp siblings a killed run left behind (build/.data.curate-*.tmp, reports/.*.tmp)
    remove_litter(out)
try:  # distillation on: the review gate first, then the accepted teacher labels are one more source
    # data.prompt_template: chat_template -> the model's chat template the check stage rendered
    spec_data = {**params["data"], "prompt_template": resolved(params["data"])}
    with curate_input(spec_data, params["distill"]) as (data, distilled):
        if distilled:
            print(message(distilled))
        report = run_curation(data, Path("build/data"), Path("reports/curation.json"),
                              ledger_path=Path("reports/curation_ledger.csv"),
                              quarantine_path=Path("reports/curation_quarantine.jsonl"),
                              card_path=Path("reports/data_card.md"))
    if distilled:  # the teacher's ceiling and the review, for the report (absent when distill is off)
        report["distill"] = distilled
        write_text_atomic("reports/curation.json", json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
except (CurationError, GateError, ChatTemplateError) as e:
    sys.exit(f"slmake curate: {e}")
for warning in report["warnings"]:
    print(f"curate: warning: {warning}", file=sys.stderr)
pii = {k: v for k, v in report["pii"]["counts"].items() if v}
print(f"curate: {report['input']} records in: {report['kept']} kept, {report['dropped_total']} dropped, "
      f"{report['quarantined_total']} quarantined; splits {report['splits']}; PII scrubbed {pii or 'none'}; "
      f"leakage 0")
