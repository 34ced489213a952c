"""``optimum-cli export openvino`` with a list of texts as NNCF's calibration data.

optimum-intel's ``OVWeightQuantizationConfig`` takes ``dataset`` as a list of strings (2.2.0,
``_prepare_causal_lm_calibration_data``: the first ``num_samples`` texts, each tokenized whole,
one calibration sample each), but its command line only takes a dataset name. This runs the
command line's own command (its parser, its export-then-quantize path) with ``--dataset``
replaced by the texts of a JSON file:

    python export_with_texts.py TEXTS.json <optimum-cli export openvino arguments>

Run as a script in a subprocess by the intel_npu target; it imports nothing from slmake.
"""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from pathlib import Path


def main(argv: list[str]) -> None:
    texts = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    if not (isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts)):
        sys.exit(f"export_with_texts: {argv[0]}: not a non-empty JSON list of strings")
    from optimum.commands.export.openvino import OVExportCommand, parse_args_openvino

    parser = ArgumentParser("optimum-cli export openvino")
    parse_args_openvino(parser)
    args = parser.parse_args(argv[1:])
    if not args.dataset:
        sys.exit("export_with_texts: pass --dataset (any name): the texts replace it")
    args.dataset = texts
    OVExportCommand(None, args, from_defaults_factory=True, parser=parser).run()


if __name__ == "__main__":
    main(sys.argv[1:])
