"""base: model.* (+ the train split for a scratch tokenizer/pretraining) -> build/base/"""

import sys
from pathlib import Path

from slmake import process_setup
from slmake.checks import stage_params

params = stage_params("model", "seed")
model, seed = params["model"], params["seed"]
threads = model["scratch"]["pretrain"]["threads"] if model["source"] == "scratch" else None
process_setup.setup(threads=threads, seed=seed, allow_network=model["allow_network"])

from slmake.base_model import (  # noqa: E402
    BaseModelError,
    build_scratch,
    check_gguf_tokenizer,
    import_hf,
    write_info,
)
from slmake.io import atomic_dir  # noqa: E402

try:
    with atomic_dir("build/base") as tmp:
        if model["source"] == "scratch":
            info = build_scratch(model, Path("build/data/train.jsonl"), tmp, seed)
        else:
            info = import_hf(model, tmp)
            check = check_gguf_tokenizer(model, tmp, Path("build/data"))  # never train on a broken tokenizer
            if check is not None:
                info["tokenizer_check"] = check
        write_info(tmp, {"name": model["name"], "source": model["source"], **info})
except BaseModelError as e:
    sys.exit(f"slmake base: {e}")
print(f"base: {model['name']} ready in build/base ({info['params']:,} parameters)")
