"""curate: raw data + data.* -> build/data/{train,val,test}.jsonl + reports/curation.json"""

import sys
from pathlib import Path

from slmake.data.curate import CurationError, run_curation
from slmake.spec import stage_params

params = stage_params("data")
try:
    report = run_curation(params["data"], Path("build/data"), Path("reports/curation.json"))
except CurationError as e:
    sys.exit(f"slmake curate: {e}")
print(f"curate: {report['input']} rows in, {report['kept']} kept, {report['dropped_total']} dropped; splits {report['splits']}")
