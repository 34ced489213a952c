"""Watch what is served: drift of the inputs and answers against the build's own data, invalid
outputs, latency against the bench, accuracy on labelled feedback (`slmake monitor`, DVC stage
`monitor`). One module per job: inputs (read), stats (the statistics), check (thresholds),
render (outputs), run (one pass), cli."""

from .inputs import MonitorError
from .run import run_monitor

__all__ = ["MonitorError", "run_monitor"]
