"""Process settings every stage applies first: offline by default, deterministic, quiet."""

from __future__ import annotations

import os
import platform
import random
from pathlib import Path

# Every switch that keeps a library in this stack from reaching the network on its own: hub
# downloads and update checks, and telemetry pings (huggingface_hub, trl, datasets, DVC/dvclive,
# NNCF, OpenVINO's tools, wandb, gradio). Set in the environment, so the tools stages run as
# subprocesses (optimum-cli, llama.cpp's converter, ORT GenAI's builder) inherit them too.
OFFLINE = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1", "DISABLE_TELEMETRY": "1",                      # the cross-tool conventions
    "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1", "ITERATIVE_DO_NOT_TRACK": "1",  # dvc, dvclive
    "NNCF_CI": "1",            # NNCF replaces its telemetry with a stub
    "CI": "true",              # openvino_telemetry (ovc, optimum-intel) declines in CI; trl skips its ping
    "WANDB_MODE": "disabled", "GRADIO_ANALYTICS_ENABLED": "False",
}


# Same bytes on any x86-64 CPU: torch's ATen, oneDNN and MKL pick kernels by CPU (AVX-512, AMX on
# Intel), whose float results differ in the last bits, and training amplifies that into different
# weights. Capping them at AVX2 (MKL: its conditional numerical reproducibility mode) makes base,
# train and evaluate byte-identical on every AVX2 CPU; measured on an AVX-512 EPYC: uncapped vs
# an emulated AVX2-only CPU differed from `base` on, capped they are identical, at no measured cost
# for these model sizes. Thread counts are part of the numerics too: each stage sets its own from
# the spec. A value the user exported wins.
PORTABLE_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2,STRICT"}


def portable_numerics() -> None:
    """Cap the CPU kernels' ISA (must run before torch is imported)."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        for k, v in PORTABLE_NUMERICS.items():
            os.environ.setdefault(k, v)


def offline(allow_network: bool = False) -> None:
    """Turn every library's network access off unless the spec allows it (model.allow_network);
    hub caches stay in the project (.hf_home) either way."""
    os.environ.setdefault("HF_HOME", str(Path(".hf_home").resolve()))
    if not allow_network:
        os.environ.update(OFFLINE)


def setup(threads: int | None = None, seed: int | None = None, allow_network: bool = False) -> None:
    offline(allow_network)
    portable_numerics()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    if threads:
        torch.set_num_threads(threads)
    if seed is not None:
        random.seed(seed)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
