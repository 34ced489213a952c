"""``optimum-cli export openvino``, run in-process with two changes the command line cannot make.

1. **Calibration texts.** optimum-intel's ``OVWeightQuantizationConfig`` takes ``dataset`` as a list
   of strings (2.2.0, ``_prepare_causal_lm_calibration_data``: the first ``num_samples`` texts, each
   tokenized whole, one calibration sample each), but its command line only takes a dataset name.
   Given a JSON file of texts, ``--dataset`` is replaced by them.
2. **The calibration model runs in f32.** With ``--dataset auto`` optimum generates the calibration
   samples with the fp32 IR on OpenVINO's CPU device, which compiles it in bf16 on AVX512-BF16/AMX
   CPUs and in f32 elsewhere: the samples, and so the int4 weights, depended on the CPU family, and
   on an AMX CPU with one thread the bf16 compile dies with SIGFPE (measured, openvino 2026.4.1,
   Intel Xeon with AMX). NNCF's own statistics engine already forces f32; this makes optimum's
   generation agree.

    python export.py TEXTS.json|- <optimum-cli export openvino arguments>

Run as a script in a subprocess by the intel_npu target; it imports nothing from slmake.
"""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from pathlib import Path


def main(argv: list[str]) -> None:
    texts = None
    if argv[0] != "-":
        texts = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        if not (isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts)):
            sys.exit(f"export.py: {argv[0]}: not a non-empty JSON list of strings")
    from optimum.commands.export.openvino import OVExportCommand, parse_args_openvino
    from optimum.intel.openvino import modeling_base

    # optimum's models compile on this module-level Core; a property set on it is every compile's default
    modeling_base.core.set_property("CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    parser = ArgumentParser("optimum-cli export openvino")
    parse_args_openvino(parser)
    args = parser.parse_args(argv[1:])
    if texts is not None:
        if not args.dataset:
            sys.exit("export.py: pass --dataset (any name): the texts replace it")
        args.dataset = texts
    OVExportCommand(None, args, from_defaults_factory=True, parser=parser).run()


if __name__ == "__main__":
    main(sys.argv[1:])
