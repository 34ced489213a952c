import os
import sys
from pathlib import Path

# Stages run `python`/`dvc` through DVC's shell: make them the interpreter running the tests.
_bin = str(Path(sys.executable).parent)
if not os.environ.get("PATH", "").startswith(_bin):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
