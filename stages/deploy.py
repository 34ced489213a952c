"""deploy@<target>: built artifacts + bench figures + spec -> build/deploy/<target>/<artifact>/ (ready to serve:
serve.json, tokenizer, Ollama Modelfile for GGUF, HF model card, data card, lineage, SERVE.md) for every
artifact the quality gate passes (bench.max_drop); build/deploy/<target>/refused.json lists the others"""

import json
import sys
from pathlib import Path

from slmake.checks import stage_params

target = sys.argv[1]
spec = stage_params("model", "data", "train", "eval", "bench")

from slmake.deploy import package_target  # noqa: E402

names = package_target(target, Path("build/compile") / target, Path("reports/bench"), Path("build/evaluate"),
                       Path("build/data"), Path("reports/data_card.md"), spec, Path("build/deploy"))
for name in names:
    print(f"deploy@{target}: build/deploy/{target}/{name}  (serve: slmake serve {target}/{name})")
refused = json.loads((Path("build/deploy") / target / "refused.json").read_text())["refused"]
for name, v in refused.items():
    print(f"deploy@{target}: REFUSED {name}: {v['reason']}")
if not names:
    print(f"WARNING: deploy@{target}: no artifact to package (see reports/bench/{target}.details.json and "
          f"build/deploy/{target}/refused.json)")
