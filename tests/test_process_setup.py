"""process_setup.setup(): what every stage's first call leaves behind."""

import subprocess
import sys

PROBE = """
import sys, torch
from slmake import process_setup
process_setup.setup(threads=1, seed=0)
print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
      "torch._inductor" in sys.modules, "torch._dynamo" in sys.modules)
"""


def test_seeded_setup_turns_on_deterministic_algorithms_without_loading_the_compiler():
    """torch's own use_deterministic_algorithms() imports inductor and dynamo (1.7 s per stage);
    the flag eager kernels read must still be on, warn-only, as the public call sets it."""
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["True", "True", "False", "False"]


def test_inductor_flag_follows_when_inductor_is_already_loaded():
    probe = PROBE.replace("from slmake", "import torch._inductor.config as c\nfrom slmake") + "print(c.deterministic)\n"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-1] == "True"
