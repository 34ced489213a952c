"""distill: the teacher labels the raw inputs -> build/distill/{labelled.jsonl, quarantine.jsonl,
review_sample.csv, teacher.json}.

1. the labelled set (data shape, read and validated as curate reads data.source): `few_shot`
   records (seeded) go into every prompt, the rest measure the teacher (its exact match is the
   ceiling a student trained on its labels converges to)
2. every input (file/line kept) is labelled; outputs that are empty, not JSON or outside
   data.response_schema go to quarantine.jsonl with the reason; duplicates and inputs already in
   the labelled set are skipped (curate would otherwise see one text with two answers)
3. `review.sample_size` labelled records (seeded) go to review_sample.csv with an empty accept
   column: gate.py refuses to train until a human filled a copy of exactly this sample
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ..data.config import resolve
from ..data.errors import CurationError
from ..data.ingest import read as read_file
from ..data.normalize import normalize
from ..data.shapes import ShapeError, ShapeReader
from ..data.sources import find_sources
from ..data.validate import RecordValidator, ResponseValidator
from ..io import atomic_dir, evenly_spaced, write_json_atomic
from ..metrics import score
from . import DistillError
from .prompts import (
    Judge,
    Judged,
    few_shot_prompt,
    input_column,
    instruction_of,
    record,
    stop_marker,
)
from .teachers import PromptTooLong, RejectedOutput, open_teacher, teacher_name

REVIEW_COLUMNS = ["id", "output_sha256", "source", "input", "teacher_output", "accept", "note"]


def input_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def output_sha(rid: str, response: str) -> str:
    """What the review row vouches for: this input's id and this exact teacher output."""
    return hashlib.sha256(f"{rid}\0{response}".encode()).hexdigest()[:16]


def read_labelled(path: str, data: dict) -> list[tuple[str, str, str]]:
    """(instruction, canonical response, file:line) of every labelled record; a bad one is an error:
    the labelled set is the ground truth the teacher is measured on."""
    records, responses, shapes = RecordValidator(data), ResponseValidator(data), ShapeReader(data)
    out = []
    try:
        files = find_sources(path, "auto")
        for src in files:
            for raw in read_file(src, data, list(records.schema["required"]), shapes.columns_used):
                where = f"{raw.source}:{raw.line}"
                if raw.kind == "empty":
                    continue
                problem = (raw.reason, raw.detail) if raw.kind == "quarantine" else records.check(raw.record)
                if problem is None:
                    try:
                        instr, resp_raw, _ = shapes.extract(raw.record)
                    except ShapeError as e:
                        problem = e.reason, e.detail
                if problem is None:
                    value, why = responses.parse(resp_raw)
                    resp = None if why else responses.canonical(value)
                    if resp is None:
                        problem = "response_invalid", why or "does not satisfy data.response_schema"
                if problem is not None:
                    raise DistillError(f"distill.labelled: {where}: {problem[0]}: {problem[1]} (every labelled "
                                       "record must be valid: it is what the teacher is measured against)")
                out.append((normalize(instr), resp, where))
    except CurationError as e:
        raise DistillError(f"distill.labelled: {e}") from None
    return out


def read_inputs(cfg: dict, data: dict):
    """Yield (file:line, text or None, problem or None) for every input record."""
    inp = cfg["inputs"]
    column = input_column(data, inp["column"])
    try:
        for src in find_sources(inp["path"], inp["format"]):
            for raw in read_file(src, data, [column], [column]):
                where = f"{raw.source}:{raw.line}"
                if raw.kind == "quarantine":
                    yield where, None, (raw.reason, raw.detail, raw.excerpt)
                elif raw.kind == "ok":
                    value = raw.record.get(column) if isinstance(raw.record, dict) else None
                    if not isinstance(value, str):
                        got = "missing" if not isinstance(raw.record, dict) or column not in raw.record \
                            else f"a {type(value).__name__}"
                        yield where, None, ("missing_field" if got == "missing" else "wrong_type",
                                            f"{column!r} is {got}, expected a string (distill.inputs.column)",
                                            json.dumps(raw.record, ensure_ascii=False, default=str)[:200])
                    else:
                        yield where, value, None
    except CurationError as e:
        raise DistillError(f"distill.inputs: {e}") from None


def run(cfg: dict, data_cfg: dict, out: Path) -> dict:
    """Label the inputs with the teacher; write `out` atomically; return teacher.json's content."""
    try:
        data = resolve(data_cfg)
    except CurationError as e:
        raise DistillError(str(e)) from None
    if not cfg["inputs"] or not cfg["labelled"]:
        raise DistillError("distill.inputs and distill.labelled: both must be set when distill.enabled is true")
    t = cfg["teacher"]
    labelled = read_labelled(cfg["labelled"], data)
    if len(labelled) <= cfg["few_shot"]:
        raise DistillError(f"distill.labelled: {len(labelled)} records, but distill.few_shot={cfg['few_shot']} "
                           "leaves none to measure the teacher on; add labelled records or lower few_shot")
    rng = random.Random(cfg["seed"])
    shot_ix = sorted(rng.sample(range(len(labelled)), cfg["few_shot"]))
    shots = [labelled[i][:2] for i in shot_ix]
    holdout = evenly_spaced([r for i, r in enumerate(labelled) if i not in set(shot_ix)], cfg["ceiling_limit"])
    judge, template = Judge(data), data["prompt_template"]
    started = time.perf_counter()
    teacher = open_teacher(t, stop_marker(template), template)
    try:
        ceiling, ceiling_rows = _ceiling(teacher, judge, template, shots, holdout, data)
        labels, quarantine, counts = _label(teacher, judge, template, shots, cfg, data, labelled)
    finally:
        teacher.close()
    sample = sorted(random.Random(cfg["seed"]).sample(range(len(labels)), min(cfg["review"]["sample_size"],
                                                                               len(labels))))
    info = {
        "enabled": True,
        "teacher": {"kind": t["kind"], "name": teacher_name(t), "path": t["path"], "url": t["url"],
                    "model": t["model"], "send": t["send"]},
        "few_shot": [labelled[i][2] for i in shot_ix],
        "ceiling": {**ceiling, "measured_on": "distill.labelled minus the few-shot examples"},
        "inputs": dict(counts),
        "labelled": len(labels),
        "quarantined": len(quarantine),
        "quarantine_reasons": dict(Counter(q["reason"] for q in quarantine)),
        "review": {"sample": len(sample), "file": "review_sample.csv", "reviewed_copy": cfg["review"]["path"],
                   "min_accept": cfg["review"]["min_accept"]},
        "seconds": round(time.perf_counter() - started, 1),
    }
    with atomic_dir(out) as tmp:
        _write_jsonl(tmp / "labelled.jsonl", ({**record(data, r["input"], r["response"]),
                                               "distill_id": r["id"], "distill_line": r["source"]} for r in labels))
        _write_jsonl(tmp / "quarantine.jsonl", quarantine)
        _write_jsonl(tmp / "ceiling.jsonl", ceiling_rows)
        (tmp / "review_sample.csv").write_text(review_csv([labels[i] for i in sample]), encoding="utf-8")
        write_json_atomic(tmp / "teacher.json", info)
    return info


def _ask(teacher, judge, template, shots, instr):
    """(raw text, Judged) for one instruction; a prompt too long or a refused answer is a Judged too."""
    try:
        text = teacher.complete(few_shot_prompt(template, shots, instr), shots, instr)
    except PromptTooLong as e:
        return "", Judged(None, "prompt_too_long", str(e))
    except RejectedOutput as e:
        return "", Judged(None, "teacher_refused", str(e))
    return text, judge(text)


def _ceiling(teacher, judge, template, shots, holdout, data) -> tuple[dict, list[dict]]:
    outputs, rows = [], []
    for instr, gold, where in tqdm(holdout, desc="distill: teacher on the labelled set", unit="record", mininterval=2):
        text, j = _ask(teacher, judge, template, shots, instr)
        outputs.append(j.response if j.response is not None else judge.clean(text))
        rows.append({"source": where, "expected": gold, "output": text, "valid": j.response is not None,
                     "exact": j.response == gold})
    return score(outputs, [g for _, g, _ in holdout], data["response_schema"]), rows


def _label(teacher, judge, template, shots, cfg, data, labelled):
    counts = Counter(read=0, labelled=0, quarantined=0, unreadable=0, empty=0, duplicate=0, already_labelled=0)
    known = {input_id(instr) for instr, _, _ in labelled}
    seen: set[str] = set()
    labels, quarantine = [], []
    todo = read_inputs(cfg, data)
    for where, text, problem in tqdm(todo, desc="distill: teacher labels the inputs", unit="input", mininterval=2):
        if cfg["limit"] is not None and counts["read"] >= cfg["limit"]:
            break
        counts["read"] += 1
        if problem is not None:
            counts["unreadable"] += 1
            quarantine.append({"source": where, "reason": problem[0], "detail": problem[1], "excerpt": problem[2]})
            continue
        text = normalize(text)
        if not text:
            counts["empty"] += 1
            continue
        instr = normalize(instruction_of(data, text))
        rid = input_id(instr)
        if rid in known:
            counts["already_labelled"] += 1
            continue
        if rid in seen:
            counts["duplicate"] += 1
            continue
        seen.add(rid)
        raw, j = _ask(teacher, judge, template, shots, instr)
        if j.response is None:
            counts["quarantined"] += 1
            quarantine.append({"source": where, "id": rid, "reason": j.reason, "detail": j.detail,
                               "input": text[:200], "output": raw[:500]})
            continue
        counts["labelled"] += 1
        labels.append({"id": rid, "source": where, "input": text, "response": j.response,
                       "sha": output_sha(rid, j.response)})
    return labels, quarantine, counts


def review_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REVIEW_COLUMNS)
    for r in rows:
        w.writerow([r["id"], r["sha"], r["source"], r["input"], r["response"], "", ""])
    return buf.getvalue()


def _write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
