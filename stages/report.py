"""report: reports/bench/*.json + evaluate + curation -> reports/report.md, reports/plots/artifacts.csv"""

import json
from pathlib import Path

from slmake.io import write_text_atomic
from slmake.report import collect, markdown, plot_csv
from slmake.spec import stage_params

params = stage_params("targets", "model", "data")
rows = collect(Path("reports/bench"), sorted(params["targets"]))
evaluation = json.loads(Path("reports/evaluate.json").read_text())
curation = json.loads(Path("reports/curation.json").read_text())
md = markdown(rows, evaluation, curation, params["model"]["name"], params["data"]["name"])
write_text_atomic("reports/report.md", md)
write_text_atomic("reports/plots/artifacts.csv", plot_csv(rows))
print(md)
