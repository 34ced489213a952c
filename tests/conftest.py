import os
import sys
from pathlib import Path

# Stages run `python`/`dvc` through DVC's shell: make them the interpreter running the tests.
_bin = str(Path(sys.executable).parent)
if not os.environ.get("PATH", "").startswith(_bin):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def micro_repo(tmp_path_factory):
    """The micro pipeline built once per session: the pipeline and the serve tests share it."""
    from e2e_utils import build_micro

    return build_micro(tmp_path_factory.mktemp("slmake_e2e"))
