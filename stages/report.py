"""report: reports/bench/*.json (+ .details.json) + evaluate + curation + cost.* -> reports/report.md
(artifact table, charts and cost table), reports/charts/*.svg (slmake.charts), reports/plots/artifacts.csv,
reports/summary.json (the short metrics `dvc exp show` fits on a screen)"""

import json
from pathlib import Path

from slmake.checks import stage_params
from slmake.io import write_json_atomic, write_text_atomic
from slmake.report import (
    collect,
    confidence_markdown,
    cost_markdown,
    cost_rows,
    end_shares,
    gate_markdown,
    load_rps,
    markdown,
    plot_csv,
    token_counts,
)
from slmake.summary import summary

params = stage_params("targets", "model", "data", "cost", "bench")
rows = collect(Path("reports/bench"), sorted(params["targets"]))
evaluation = json.loads(Path("reports/evaluate.json").read_text())
curation = json.loads(Path("reports/curation.json").read_text())
cost = params["cost"]
prompt_tokens, ref_completion, completion = token_counts(Path("build/evaluate"), Path("build/bench"))
lines = cost_rows(rows, cost, prompt_tokens, ref_completion, completion, load_rps(cost["load_report"]),
                  end_shares(Path("build/bench")))
# the charts (reports/charts/*.svg; matplotlib loads only in slmake.charts): a section before the cost table
from time import perf_counter  # noqa: E402

from slmake.charts import report_charts  # noqa: E402

t0 = perf_counter()
charts = report_charts(rows, evaluation["finetuned"]["exact_match"], Path("reports/train/plots/metrics"),
                       Path("reports/charts"))
charts_s = perf_counter() - t0
gate = gate_markdown(rows, params["bench"].get("max_drop"))   # what deploy refused (bench.max_drop)
confidence = confidence_markdown(rows)   # what serve.min_confidence would do (bench's label probabilities)
md = markdown(rows, evaluation, curation, params["model"]["name"], params["data"]["name"],
              (gate + "\n" if gate else "") + (confidence + "\n" if confidence else "") + charts + "\n"
              + cost_markdown(lines, cost))
if "distill" in curation:  # distill on: the teacher's ceiling beside the student
    from slmake.distill.report import markdown as distill_markdown

    md += "\n" + distill_markdown(curation["distill"], evaluation)
write_text_atomic("reports/report.md", md)
write_text_atomic("reports/plots/artifacts.csv", plot_csv(rows))
write_json_atomic("reports/summary.json", summary(rows))
print(md)
print(f"report: charts drawn in {charts_s:.2f} s")
