"""The review gate: synthetic labels are never trained on unvalidated.

The distill stage writes build/distill/review_sample.csv (a seeded random sample of the teacher's
labels, `accept` empty). A human copies it to distill.review.path, marks each row accepted or
rejected, and commits it. Curate runs `accepted_labels` first and stops with a message naming the
file and what to do when the reviewed copy is missing, reviews a different sample (rows are
matched by input id and the hash of the teacher's output, so a relabelled input needs a new
review), leaves rows unmarked, or accepts fewer than distill.review.min_accept of them. Labels
rejected in review are left out; the rest join data.source as one more source (origin `distill:`
+ the teacher), so dedup, PII scrubbing and leakage checks treat them like any other record.
"""

from __future__ import annotations

import csv
import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..data.sources import entries
from . import DistillError

YES = {"1", "y", "yes", "true", "accept", "accepted", "ok", "x"}
NO = {"0", "n", "no", "false", "reject", "rejected"}


class GateError(DistillError):
    """Training may not start: the message says which file and what to do."""


@dataclass
class Verdict:
    accepted: int
    rejected: list[str]          # input ids rejected in review
    sample: int

    @property
    def rate(self) -> float:
        return self.accepted / self.sample if self.sample else 0.0


def _rows(path: Path) -> list[tuple[int, dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("id", "output_sha256", "accept") if c not in (reader.fieldnames or [])]
            if missing:
                raise GateError(f"{path}: missing column(s) {missing}; expected the columns of "
                                "build/distill/review_sample.csv (copy it and fill `accept`)")
            rows, start = [], reader.line_num + 1
            for row in reader:   # a row's first line (a quoted field may span lines)
                rows.append((start, row))
                start = reader.line_num + 1
            return rows
    except UnicodeDecodeError as e:
        raise GateError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 CSV") from None
    except csv.Error as e:
        raise GateError(f"{path}: not a readable CSV ({e})") from None


def review(cfg: dict, distill_dir: Path) -> Verdict:
    """Check the reviewed sample against the one the distill stage drew; raise GateError."""
    sample_path, reviewed = distill_dir / "review_sample.csv", Path(cfg["review"]["path"])
    todo = (f"copy {sample_path} to {reviewed}, fill its `accept` column (yes/no for every row), "
            f"save it and run `dvc repro` again")
    if not reviewed.is_file():
        raise GateError(f"{reviewed}: not found. Training is refused until a human has reviewed a sample of "
                        f"the teacher's labels: {todo}")
    want = {(r["id"], r["output_sha256"]) for _, r in _rows(sample_path)}
    rows = _rows(reviewed)
    got = {(r["id"], r["output_sha256"]) for _, r in rows}
    if got != want or len(rows) != len(want):
        stale, absent = len(got - want), len(want - got)
        raise GateError(f"{reviewed}: reviews a different sample than {sample_path} ({stale} reviewed row(s) "
                        f"are not in the current sample, {absent} sample row(s) are not reviewed, "
                        f"{len(rows)} rows for {len(want)}): the teacher's labels changed since the review. "
                        f"Review the new sample: {todo}")
    unmarked, accepted, rejected = [], 0, []
    for line, r in rows:
        mark = (r["accept"] or "").strip().lower()
        if mark in YES:
            accepted += 1
        elif mark in NO:
            rejected.append(r["id"])
        else:
            unmarked.append(f"line {line}" + (f" ({r['accept']!r})" if mark else ""))
    if unmarked:
        shown = ", ".join(unmarked[:8]) + (f" and {len(unmarked) - 8} more" if len(unmarked) > 8 else "")
        raise GateError(f"{reviewed}: {len(unmarked)} row(s) have no decision in `accept`: {shown}; "
                        f"mark each row yes or no ({'/'.join(sorted(YES))} or {'/'.join(sorted(NO))})")
    verdict = Verdict(accepted, rejected, len(rows))
    need = cfg["review"]["min_accept"]
    if verdict.rate < need:
        raise GateError(f"{reviewed}: the reviewer accepted {accepted} of {len(rows)} sampled labels "
                        f"({verdict.rate:.0%}), below distill.review.min_accept={need:g}: the teacher's labels are "
                        "not trusted for training. Improve the teacher (distill.teacher, distill.few_shot, the "
                        "prompt) and review the new sample, or lower distill.review.min_accept deliberately")
    return verdict


def accepted_labels(cfg: dict, distill_dir: Path, out: Path) -> tuple[Verdict, int]:
    """Run the gate, then write the teacher's labels minus those rejected in review to `out`
    (JSONL in the data shape). Returns the verdict and the number of records written."""
    verdict = review(cfg, distill_dir)
    drop, n = set(verdict.rejected), 0
    with open(distill_dir / "labelled.jsonl", encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for line in src:
            if json.loads(line)["distill_id"] not in drop:
                dst.write(line)
                n += 1
    return verdict, n


def origin(distill_dir: Path) -> str:
    """The ledger's name for the distilled source: distill:<teacher>."""
    info = json.loads((distill_dir / "teacher.json").read_text())
    return f"distill:{info['teacher']['name']}"


def with_distilled(data: dict, cfg: dict, distill_dir: Path, tmp: Path) -> tuple[dict, Verdict, int]:
    """`data` with the accepted teacher labels appended to data.source (run the gate first)."""
    path = tmp / "distilled.jsonl"
    verdict, n = accepted_labels(cfg, distill_dir, path)
    extra = {"path": str(path), "format": "jsonl", "origin": origin(distill_dir)}
    return {**data, "source": [e for _, e in entries(data["source"])] + [extra]}, verdict, n


@contextmanager
def curate_input(data: dict, cfg: dict, distill_dir: Path = Path("build/distill")):
    """What curate curates: `data` as is when distillation is off; else the gate, then `data` with
    the accepted labels as one more source. Yields (data, summary or None); raises GateError.
    The summary goes into reports/curation.json["distill"] (the report's Distillation section)."""
    if not cfg["enabled"]:
        yield data, None
        return
    with tempfile.TemporaryDirectory(prefix="slmake-distill-") as tmp:
        new, verdict, n = with_distilled(data, cfg, distill_dir, Path(tmp))
        info = json.loads((distill_dir / "teacher.json").read_text())
        yield new, {"origin": new["source"][-1]["origin"], "teacher": info["teacher"]["name"],
                    "ceiling": info["ceiling"], "inputs": info["inputs"], "quarantined": info["quarantined"],
                    "review": {"file": cfg["review"]["path"], "accepted": verdict.accepted, "sample": verdict.sample,
                               "rate": round(verdict.rate, 4), "min_accept": cfg["review"]["min_accept"],
                               "rejected": len(verdict.rejected)},
                    "labels_to_curate": n}


def message(summary: dict) -> str:
    r = summary["review"]
    return (f"distill: review {r['file']}: {r['accepted']}/{r['sample']} accepted ({r['rate']:.0%}, minimum "
            f"{r['min_accept']:g}); {summary['labels_to_curate']} teacher labels join data.source as "
            f"{summary['origin']} ({r['rejected']} rejected in review)")
