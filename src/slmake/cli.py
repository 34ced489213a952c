"""The `slmake` command: check a spec, list targets, serve a built artifact. Building is `dvc repro` / `dvc exp run`."""

from __future__ import annotations

import argparse
import sys

import yaml

from . import targets
from .checks import InvalidSpec, load_spec
from .doctor import add_parser as add_doctor
from .io import write_text_atomic
from .monitor.cli import add_parser as add_monitor_parser
from .search import add_parser as add_search
from .serve.cli import add_parser as add_serve
from .spec import SpecError
from .toolchain import versions


def cmd_check(args) -> int:
    try:  # compose conf/, the JSON Schema, then what it cannot say: paths exist, shapes divide...
        spec = load_spec(conf=args.conf, overrides=args.overrides)
    except InvalidSpec as e:
        print("slmake check: the composed spec is invalid:", file=sys.stderr)
        for p in e.problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    except SpecError as e:
        print(f"slmake check: {e}", file=sys.stderr)
        return 2
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    if args.write:
        write_text_atomic(args.write, text)
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def cmd_targets(args) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="slmake targets")
    for col in ("target", "formats", "runtime", "toolchain", "hardware here"):
        table.add_column(col, overflow="fold")
    for name in targets.REGISTRY:
        try:
            mod = targets.load(name)
        except ImportError as e:
            table.add_row(name, "?", "?", f"import failed: {e}", "unknown")
            continue
        info, probe = mod.TARGET, mod.probe()
        tools = ", ".join(f"{k} {v or 'MISSING'}" for k, v in versions(info.packages).items())
        here = ("yes: " if probe.present else "no: ") + probe.reason
        table.add_row(name, ", ".join(info.formats), info.runtime, tools, here)
    Console(width=args.width).print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slmake", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="compose + validate the spec, print it, run nothing")
    check.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=hf_local train.lora.r=4")
    check.add_argument("--conf", default="conf", help="config directory (default: conf)")
    check.add_argument("--write", metavar="FILE", help="write the composed spec to FILE (e.g. params.yaml)")
    check.set_defaults(func=cmd_check)
    tg = sub.add_parser("targets", help="targets, their formats, runtimes, toolchains and hardware here")
    tg.add_argument("--width", type=int, default=None)
    tg.set_defaults(func=cmd_targets)
    add_monitor_parser(sub)
    add_serve(sub)
    add_doctor(sub)
    add_search(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
