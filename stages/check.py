"""check: the whole spec (JSON Schema + semantic checks) -> build/check.ok, build/check.model.json,
build/check.data.json, build/check.distill.json

Every other stage depends on build/check.ok, so DVC runs this first and stops here on a bad spec,
before it removes any stage's outputs. check.ok's bytes never change, so passing this stage never
invalidates anything downstream. build/check.model.json holds the content hashes of the files
behind model.hf.path (or just the source, for a scratch model): `base` depends on it, so a swapped
model file reruns `base`. build/check.data.json likewise holds the content hashes of every
data.source file (one source or a list: dvc.yaml cannot list a variable number of deps): `curate`
depends on it (with the reviewed distillation sample's hash when distill is on);
build/check.distill.json the hashes of distill's inputs, labelled set and teacher, for `distill`.
The stage is `always_changed`, so those hashes are taken on every repro
(cached by size/mtime/inode in build/.hash_cache.json, as DVC caches its own). It removes the
outputs of targets the spec no longer names, and the temp folders killed stages left under build/
and reports/: DVC may restore a killed stage's outputs from its run cache instead of running it,
and then nothing else would. When nothing the
last passing check read has changed (params.yaml, slmake's code, the files it hashed or named), it
writes that pass's outputs back without importing the checks (noop_stamp.py): a no-op repro.
"""

import sys
from pathlib import Path

from slmake.io import sweep_litter
from slmake.noop_stamp import Stamp, recording

stamp = Stamp(Path("build/.check.stamp.json"), Path("params.yaml"), [__file__])
if stamp.restore():  # nothing it read has moved since the last pass: same outputs, no imports
    sweep_litter("build", "reports")
    print("check: params.yaml is valid (nothing it reads changed since the last check)")
    sys.exit(0)

from slmake.chat_template import CHAT, ChatTemplateError  # noqa: E402
from slmake.chat_template import render as render_chat  # noqa: E402
from slmake.checks import check_params  # noqa: E402
from slmake.data.errors import CurationError  # noqa: E402
from slmake.data.sources import fingerprint as data_fingerprint  # noqa: E402
from slmake.distill import DistillError  # noqa: E402
from slmake.distill import fingerprint as distill_fp  # noqa: E402
from slmake.io import prune_dropped, write_json_atomic, write_text_atomic  # noqa: E402
from slmake.model_files import HashCache, ModelFileError, fingerprint  # noqa: E402

cache = recording(HashCache(Path("build/.hash_cache.json")))
spec, problems = check_params("params.yaml", cache)  # params.yaml read strictly, schema, semantic checks
if problems:
    sys.exit("slmake check: params.yaml is invalid (nothing was rebuilt or removed):\n"
             + "\n".join(f"  - {p}" for p in problems))
try:
    model = fingerprint(spec["model"], cache)
    data = data_fingerprint(spec["data"]["source"], spec["data"]["format"], cache)
    if spec["data"]["prompt_template"] == CHAT:   # rendered once here; curate and deploy read it back
        data["chat_template"] = render_chat(spec["model"])
    distill = distill_fp.stage_inputs(spec["distill"], cache)   # {"enabled": false} when off
    if spec["distill"]["enabled"]:
        data["distill_review"] = distill_fp.review(spec["distill"])
except (ModelFileError, CurationError, DistillError, ChatTemplateError) as e:  # a file changed since the check
    sys.exit(f"slmake check: {e}")
cache.save()
sweep_litter("build", "reports")  # no stage runs while this one does: DVC runs them one at a time
# a target the spec dropped leaves its compile/bench/deploy outputs behind; monitor and report
# depend on the parent folders, so those would hash files no clone has (the cache keeps them)
per_target = ["build/compile/{key}", "build/bench/{key}", "build/deploy/{key}",
              "reports/bench/{key}.json", "reports/bench/{key}.details.json"]   # dvc.yaml's ${key} outputs
for gone in prune_dropped(per_target, set(spec["targets"])):
    print(f"check: removed {gone} (its target is no longer in params.yaml targets)")
write_json_atomic("build/check.model.json", model)
write_json_atomic("build/check.data.json", data)
write_json_atomic("build/check.distill.json", distill)
write_text_atomic("build/check.ok", "ok\n")
stamp.save(sorted(p.as_posix() for p in Path("build").glob("check.*")), cache.read)  # every output above
inputs = f"{len(model['files'])} file(s) hashed" if "files" in model else model.get("hub_id", model["source"])
print(f"check: params.yaml is valid; base model inputs: {inputs}")
