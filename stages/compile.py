"""compile@<target>: build/train/merged + targets.<target>.* -> build/compile/<target>/
(toolchain logs in build/logs/compile/<target>/, outside the cached output)"""

import sys
from pathlib import Path

from slmake import process_setup
from slmake.checks import stage_params

target = sys.argv[1]
params = stage_params("targets")
if target not in params["targets"]:
    sys.exit(f"slmake compile: target {target!r} is not enabled in params.yaml (enabled: {sorted(params['targets'])})")
process_setup.setup(threads=None, seed=0)

from slmake.compile import CompileError, compile_target  # noqa: E402

try:
    entries = compile_target(target, params["targets"][target], Path("build/train/merged"), Path("build/data"),
                             Path("build/compile"), Path("build/logs/compile"), Path("build/base"))
except CompileError as e:
    sys.exit(f"slmake compile@{target}: invalid settings:\n{e}")
for e in entries:
    state = f"{e['size_bytes'] / 1e6:8.2f} MB" if e["status"] == "built" else f"FAILED: {e['reason']}"
    print(f"compile@{target}: {e['name']:<16} {state}")
