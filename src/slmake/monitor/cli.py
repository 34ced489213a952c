"""`slmake monitor`: exit 0 when the traffic looks like the build, 1 with a one-line reason when a
threshold is crossed, 2 when the input cannot be used."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from ..checks import spec_problems
from ..spec import SpecError, load_params
from .inputs import MonitorError


def _override(spec: dict, item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.startswith("monitor."):
        raise SystemExit(f"slmake monitor: override {item!r}: expected monitor.<key>=<value>")
    node = spec
    *parents, last = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SystemExit(f"slmake monitor: override {item!r}: {p} is not a mapping")
    node[last] = yaml.safe_load(raw)


def cmd_monitor(args) -> int:
    from .run import run_monitor  # .run, .alerts: numpy and prometheus_client, not for --help

    try:
        spec = load_params(args.params)
        if "monitor" not in spec:
            raise SpecError(f"{args.params}: no 'monitor' section; run `slmake check --write {args.params}`")
        for item in args.overrides:
            _override(spec, item)
        m = spec["monitor"]
        for flag, key in ((args.log, "request_log"), (args.feedback, "feedback"), (args.artifact, "artifact")):
            if flag is not None:
                m[key] = flag
        if args.last is not None:
            m["window"]["last"] = args.last or None
        if args.since is not None:
            m["window"]["since"] = args.since or None
        problems = spec_problems(spec, only=["monitor", "data"])
        if problems:
            raise SpecError("invalid spec:\n" + "\n".join(f"  - {p}" for p in problems))
        result, context = run_monitor(m, spec["data"], args.out, data_dir=args.data_dir, bench_dir=args.bench_dir)
    except (SpecError, MonitorError) as e:
        print(f"slmake monitor: {e}", file=sys.stderr)
        return 2
    from .alerts import reason

    metrics = result["metrics"]
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        shown = {k: v for k, v in metrics.items() if k not in ("alerts", "retrain")}
        print("slmake monitor: " + ", ".join(f"{k} {v}" for k, v in shown.items()), file=sys.stderr)
        print(f"slmake monitor: wrote {args.out}/metrics.json, report.md, plots/", file=sys.stderr)
    if result["alerts"]:
        print(reason(result["alerts"]), file=sys.stderr)
        return 1
    if not metrics["requests"]:
        print(f"no traffic: {context['log']} has no requests in the window", file=sys.stderr)
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("monitor", help="compare served traffic (the request log) with the build; exit 1 on drift",
                       description=__doc__)
    p.add_argument("overrides", nargs="*", help="spec overrides, e.g. monitor.thresholds.label_psi=0.3")
    p.add_argument("--params", default="params.yaml", help="the build's spec (default: params.yaml)")
    p.add_argument("--log", help="request log (default: monitor.request_log)")
    p.add_argument("--feedback", help="labelled feedback JSONL in the data's shape (default: monitor.feedback)")
    p.add_argument("--artifact", help="served artifact, target/name (default: the one the log names)")
    p.add_argument("--last", type=int, help="the most recent N requests (0 = all)")
    p.add_argument("--since", help="requests since a duration ago (24h, 7d) or an ISO-8601 time")
    p.add_argument("--data-dir", default="build/data", help="curated splits of the build (default: build/data)")
    p.add_argument("--bench-dir", default="reports/bench", help="bench figures (default: reports/bench)")
    p.add_argument("--out", default="reports/monitor", help="output folder (default: reports/monitor)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    p.set_defaults(func=cmd_monitor)
    return p
