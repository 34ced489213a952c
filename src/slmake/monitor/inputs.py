"""What monitor reads: a window of the request log, the build's train split, labelled feedback.

Every problem a user can fix (a missing file, a bad line in the feedback) raises MonitorError
with the file, line and what was expected; a request log may end in a half-written line (a
server killed mid-write), so unreadable log lines are counted and reported, not fatal.
"""

from __future__ import annotations

import json
import re
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..data.config import resolve
from ..data.normalize import normalize
from ..data.shapes import ShapeError, ShapeReader
from ..data.validate import RecordValidator, ResponseValidator
from ..prompt import format_prompt
from ..request_log import scrubber_for


class MonitorError(Exception):
    """A problem the user can fix; the message is meant to be shown as is."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(since: str | None, now: datetime | None = None) -> datetime | None:
    """A duration back from now ("24h", "7d", "30m") or an ISO-8601 time; None passes through."""
    if since is None or since == "":
        return None
    now = now or datetime.now(timezone.utc)
    m = _DURATION.match(str(since))
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        t = datetime.fromisoformat(str(since).replace("Z", "+00:00"))
    except ValueError:
        raise MonitorError(f"monitor.window.since: {since!r} is neither a duration (24h, 7d, 30m) "
                           "nor an ISO-8601 time (2026-11-28T09:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def log_files(path: Path) -> list[Path]:
    """The log and its rotated backups (path.1 is the newest backup), oldest first."""
    backups = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1:]
        if suffix.isdigit():
            backups.append((int(suffix), p))
    files = [p for _, p in sorted(backups, reverse=True)]
    return files + ([path] if path.exists() else [])


def read_window(path: str | Path, last: int | None = None, since: str | None = None,
                now: datetime | None = None) -> tuple[list[dict], dict]:
    """The most recent ``last`` requests logged at or after ``since``, oldest first, and
    {"files", "lines", "malformed"} about what was read."""
    path = Path(path)
    start = parse_since(since, now)
    window: deque = deque(maxlen=last or None)
    info = {"files": 0, "lines": 0, "malformed": 0}
    for f in log_files(path):
        info["files"] += 1
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    continue
                info["lines"] += 1
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict):
                        raise ValueError("not an object")
                    if start is not None:
                        ts = datetime.fromisoformat(str(rec.get("ts", "")).replace("Z", "+00:00"))
                        if ts.tzinfo is None:
                            ts = ts.replace(tzinfo=timezone.utc)
                        if ts < start:
                            continue
                except ValueError:
                    info["malformed"] += 1
                    continue
                window.append(rec)
    return list(window), info


def instruction_of(prompt: str, template: str) -> str:
    """Undo the prompt template: the train split stores the full prompt, the log the raw input."""
    head, _, tail = format_prompt(template, "\x00").partition("\x00")
    if prompt.startswith(head) and prompt.endswith(tail) and len(prompt) >= len(head) + len(tail):
        return prompt[len(head): len(prompt) - len(tail)]
    return prompt


def _label(rec: dict, label_field: str | None) -> str | None:
    if rec.get("label") is not None:
        return str(rec["label"])
    if not label_field:
        return None
    resp = rec.get("response")
    try:
        value = json.loads(resp) if isinstance(resp, str) else resp
    except ValueError:
        return None
    return str(value[label_field]) if isinstance(value, dict) and value.get(label_field) is not None else None


def _records(path: Path, expected: str):
    """(line number, parsed JSON) of every non-blank line; a line that is not JSON is the user's
    to fix, named with ``expected``."""
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except ValueError as e:
                raise MonitorError(f"{path}:{i}: not JSON ({e}); expected {expected}") from None


def read_split(path: Path, template: str, label_field: str | None) -> dict:
    """{"inputs": raw instructions, "labels": labels} of one curated split (build/data/<split>.jsonl)."""
    if not path.exists():
        raise MonitorError(f"{path}: not found; the baseline is the build's curated data (run `dvc repro curate`)")
    inputs, labels = [], []
    expected = "a curated record with 'prompt' and 'response'"
    for i, rec in _records(path, expected):
        try:
            inputs.append(instruction_of(rec["prompt"], template))
        except (KeyError, TypeError):
            raise MonitorError(f"{path}:{i}: expected {expected}") from None
        labels.append(_label(rec, label_field))
    if not inputs:
        raise MonitorError(f"{path}: no records")
    return {"inputs": inputs, "labels": labels}


def match_key(text: str) -> str:
    return normalize(text or "")


def read_feedback(path: str | Path, data_cfg: dict) -> list[dict]:
    """Labelled feedback in the data's shape (JSONL) -> [{"key", "response"}]; the key is the
    instruction normalised and PII-scrubbed as curation and the request log do, so it matches
    the log's input."""
    path = Path(path)
    if not path.exists():
        raise MonitorError(f"{path}: feedback file not found")
    cfg = resolve(data_cfg)
    records, shapes, responses = RecordValidator(cfg), ShapeReader(cfg), ResponseValidator(cfg)
    scrub = scrubber_for(cfg["pii"])
    out = []
    for i, rec in _records(path, f"a feedback record in the data's shape '{cfg['shape']}'"):
        problem = records.check(rec)
        if problem is not None:
            raise MonitorError(f"{path}:{i}: {problem[1]} (feedback records have the data's shape "
                               f"'{cfg['shape']}')")
        try:
            instr, resp_raw, _ = shapes.extract(rec)
        except ShapeError as e:
            raise MonitorError(f"{path}:{i}: {e.detail}") from None
        value, why = responses.parse(resp_raw)
        if why is not None or responses.canonical(value) is None:
            raise MonitorError(f"{path}:{i}: the response is not valid for data.response_schema"
                               + (f" ({why})" if why else ""))
        out.append({"key": match_key(scrub.scrub(normalize(instr))), "response": value})
    if not out:
        raise MonitorError(f"{path}: no feedback records")
    return out
