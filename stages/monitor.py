"""monitor: logs/ (the request log) + build/data + reports/bench + monitor.* -> reports/monitor/
(metrics.json for `dvc exp show`, report.md, plots/*.csv). No log: "no traffic" metrics, success.
A crossed threshold is printed; it fails the stage only with monitor.fail_stage: true."""

import sys

from slmake.checks import stage_params
from slmake.monitor.alerts import reason
from slmake.monitor.inputs import MonitorError
from slmake.monitor.run import run_monitor

params = stage_params("monitor", "data")
cfg = params["monitor"]
try:
    result, context = run_monitor(cfg, params["data"], "reports/monitor")
except MonitorError as e:
    print(f"monitor: {e}", file=sys.stderr)
    raise SystemExit(2) from None
m = result["metrics"]
print(f"monitor: {m['requests']} requests in the window of {context['log']}" + ("" if m["requests"] else " (no traffic)"))
if result["alerts"]:
    print(f"monitor: {reason(result['alerts'])}")
    if cfg["fail_stage"]:
        raise SystemExit(1)
