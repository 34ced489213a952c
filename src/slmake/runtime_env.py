"""Process settings every stage applies first: offline by default, deterministic, quiet."""

from __future__ import annotations

import os
import random
from pathlib import Path


def setup(threads: int | None = None, seed: int | None = None, allow_network: bool = False) -> None:
    os.environ.setdefault("HF_HOME", str(Path(".hf_home").resolve()))
    if not allow_network:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    if threads:
        torch.set_num_threads(threads)
    if seed is not None:
        random.seed(seed)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
