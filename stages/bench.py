"""bench@<target>: build/compile/<target> + reference + bench.* -> reports/bench/<target>.json (DVC metrics:
the numbers compared across experiments), reports/bench/<target>.details.json (status, reasons,
runtimes), build/bench/<target>/outputs.jsonl (each artifact's greedy outputs)"""

import json
import sys
from pathlib import Path

from slmake import process_setup
from slmake.checks import stage_params

target = sys.argv[1]
params = stage_params("bench", "eval", "data")
# bench.threads: explicit, or null = the runtime's default (cores // J in a sweep of J experiments)
bench = dict(params["bench"], threads=process_setup.limit_threads(params["bench"]["threads"]))

from slmake.bench import bench_target, split_results  # noqa: E402
from slmake.io import atomic_dir, write_json_atomic  # noqa: E402
from slmake.runtimes.guide import decode_constraint  # noqa: E402

data = params["data"]
# decode as served: the grammar serve enforces (eval.constrained null), or as eval.constrained says
grammar, _ = decode_constraint(params["eval"].get("constrained"), data["response_schema"],
                               data.get("response_format", "json"))
results = bench_target(target, Path("build/compile") / target, Path("build/evaluate"), bench,
                       params["eval"]["max_new_tokens"], data["response_schema"], grammar, data.get("label_field"))
metrics, details, outputs = split_results(results)
with atomic_dir(Path("build/bench") / target) as tmp, open(tmp / "outputs.jsonl", "w", encoding="utf-8") as f:
    for name, rows in sorted(outputs.items()):
        for row in rows:
            f.write(json.dumps({"artifact": name, **row}, ensure_ascii=False) + "\n")
write_json_atomic(Path("reports/bench") / f"{target}.details.json", {target: details})
write_json_atomic(Path("reports/bench") / f"{target}.json", {target: metrics})
for name, r in results.items():
    if r["status"] == "ok":
        print(f"bench@{target}: {name:<16} acc {r['exact_match']:.3f} parity {r['parity']:.3f} "
              f"{r['decode_tok_s']} tok/s ttft {r['ttft_ms']} ms request p50 {r['request_ms_p50']} ms "
              f"rss {r['peak_rss_mb']} MB")
    else:
        print(f"bench@{target}: {name:<16} {r['status']}: {r.get('reason', '')}")
