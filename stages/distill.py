"""distill: distill.* + data.* (prompt, shape, response schema) -> build/distill/

Off (the default): one constant file, build/distill/teacher.json = {"enabled": false}, so nothing
downstream changes. On: the teacher labels distill.inputs -> labelled.jsonl, quarantine.jsonl,
review_sample.csv (for a human), ceiling.jsonl and teacher.json (the teacher's exact match on the
labelled set: the ceiling). Curate's review gate (slmake.distill.gate) decides whether they train.
"""

import sys
from pathlib import Path

from slmake.checks import stage_params
from slmake.io import atomic_dir, remove_litter, write_json_atomic

params = stage_params("distill", "data")
cfg, out = params["distill"], Path("build/distill")
remove_litter(out)
if not cfg["enabled"]:
    with atomic_dir(out) as tmp:
        write_json_atomic(tmp / "teacher.json", {"enabled": False})
    print("distill: off (distill.enabled is false)")
    sys.exit(0)

from slmake import process_setup  # noqa: E402

# null threads -> every core this process may use; the teacher runtime gets the same count
cfg["teacher"]["threads"] = process_setup.setup(threads=cfg["teacher"]["threads"], seed=cfg["seed"])
from slmake.distill import DistillError  # noqa: E402
from slmake.distill.label import run  # noqa: E402

try:
    info = run(cfg, params["data"], out)
except DistillError as e:
    sys.exit(f"slmake distill: {e}")
c, n = info["ceiling"], info["inputs"]
print(f"distill: teacher {info['teacher']['name']}: ceiling exact_match {c['exact_match']:.3f} on {c['n']} labelled "
      f"records (valid {c['valid']:.3f}); inputs {n['read']}: {n['labelled']} labelled, {info['quarantined']} "
      f"quarantined {info['quarantine_reasons'] or ''}, {n['duplicate']} duplicate, {n['already_labelled']} already "
      f"labelled; review {info['review']['sample']} rows: copy {out}/review_sample.csv to "
      f"{cfg['review']['path']} and fill `accept`")
