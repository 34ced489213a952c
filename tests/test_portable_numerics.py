"""Same bytes on any x86-64 CPU: with process_setup.setup()'s ISA caps, a few training steps give
byte-identical weights whether the CPU offers AVX-512 or only AVX2 (emulated with the libraries'
own ISA limits); without the caps, on an AVX-512 CPU, they differ (the control)."""

import os
import platform
import subprocess
import sys

import pytest

from slmake import process_setup

pytestmark = [pytest.mark.slow,  # trains twice in subprocesses
              pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")]

TRAIN = """
import hashlib, sys
from slmake import process_setup
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
if sys.argv[1] == "slmake":
    process_setup.setup(threads=threads, seed=0)
import torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.set_num_threads(threads)
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64))
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
gen = torch.Generator().manual_seed(0)
for _ in range(8):
    batch = torch.randint(0, 256, (8, 64), generator=gen)
    model(input_ids=batch, labels=batch).loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)   # as pretraining and the Trainer do
    opt.step()
    opt.zero_grad()
h = hashlib.sha256()
for k, v in sorted(model.state_dict().items()):
    h.update(v.numpy().tobytes())
print(torch.backends.cpu.get_cpu_capability(), h.hexdigest())
"""
CAPS = tuple(process_setup.PORTABLE_NUMERICS) + ("MKL_ENABLE_INSTRUCTIONS",)


def run(mode: str, threads: int = 2, **env: str) -> tuple[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in CAPS}
    res = subprocess.run([sys.executable, "-c", TRAIN, mode, str(threads)],
                         env={**base, "OMP_NUM_THREADS": str(threads), **env},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    capability, digest = res.stdout.split()[-2:]
    return capability, digest


# The CPU features each oneDNN ISA level needs (/proc/cpuinfo flags). A level above this CPU acts as
# its best one, so comparing it with the reference here would compare two identical runs: skipped.
ONEDNN_NEEDS = {"AVX2": {"avx2"}, "AVX512_CORE": {"avx512f", "avx512bw", "avx512vl", "avx512dq"},
                "AVX512_CORE_VNNI": {"avx512_vnni"}, "AVX512_CORE_BF16": {"avx512_bf16"}, "AVX512_CORE_AMX": {"amx_tile"}}
ORDER = list(ONEDNN_NEEDS)


def cpu_flags() -> set[str]:
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def best_onednn_level() -> str:
    flags, best = cpu_flags(), "below AVX2"
    for level in ORDER:
        if not ONEDNN_NEEDS[level] <= flags:
            break
        best = level
    return best


def test_capped_training_is_identical_on_avx512_and_avx2_cpus():
    if best_onednn_level() in ("AVX2", "below AVX2"):
        pytest.skip("this CPU has no AVX-512: capped and AVX2-emulated runs are the same run here")
    _, here = run("slmake")
    avx2_cpu = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    capability, there = run("slmake", **avx2_cpu)
    assert capability == "AVX2" and here == there


def test_uncapped_training_depends_on_the_cpu():
    capability, native = run("plain")
    if capability != "AVX512":
        pytest.skip(f"this CPU's best kernels are {capability}: nothing to compare")
    _, avx2 = run("plain", ATEN_CPU_CAPABILITY="avx2")
    assert native != avx2  # the problem the caps solve


def test_power_of_two_thread_counts_give_the_same_bytes():
    """Thread keys default to the cores rounded down to a power of two (process_setup.resolve_threads):
    1, 2 and 4 threads (4 oversubscribes a 2-core box: still a numerics test) train the same bytes."""
    digests = {t: run("slmake", threads=t)[1] for t in (1, 2, 4)}
    assert len(set(digests.values())) == 1, digests


@pytest.mark.parametrize("onednn", ["AVX2", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16",
                                    "AVX512_CORE_AMX", "DEFAULT"])
def test_onednn_isa_level_does_not_change_the_bytes(onednn, reference):
    """oneDNN dispatches by CPU features (a level above this CPU's acts as its best): whatever level
    a CPU offers, up to AMX, slmake's fp32 training never reaches a oneDNN kernel whose rounding differs.
    DEFAULT (the reference run again) is also run-to-run determinism."""
    best = best_onednn_level()
    if onednn != "DEFAULT" and (best not in ORDER or ORDER.index(onednn) >= ORDER.index(best)):
        pytest.skip(f"this CPU's best oneDNN level is {best}: {onednn} runs as the reference does")
    assert run("slmake", ONEDNN_MAX_CPU_ISA=onednn)[1] == reference


@pytest.fixture(scope="module")
def reference() -> str:
    return run("slmake")[1]
