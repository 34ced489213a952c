"""The curate stage's library: raw JSONL in, train/val/test splits and an accounting report out.

Why it is shaped this way:

* Every physical input line is accounted for: either kept, or dropped under exactly one named
  rule.  The report proves it (``kept + dropped_total == input``), so silent data loss is a bug
  the stage refuses to publish.
* Splits are decided by a hash of the normalised instruction, not by a shuffled index, so a row
  keeps its split when other rows are added or removed, and duplicates can never straddle
  train/test (which would inflate held-out accuracy).
* Responses are validated against the spec's JSON Schema and re-serialised canonically, so the
  model is trained on one spelling of each answer and evaluation can compare strings.
* Outputs are written to temp files and renamed only after the whole input was read, so a crash
  or a bad config never leaves half-written splits for DVC to cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema

SPLITS = ("train", "val", "test")
RULES = ("not_utf8", "invalid_json", "missing_field", "wrong_type", "empty", "too_long",
         "response_invalid", "duplicate", "conflicting_duplicate")

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # control chars except \n (tab -> space below)
_SPACES = re.compile(r"[ \t]+")


class CurationError(Exception):
    """A problem the user can fix (missing file, bad config); the message says where and what."""


def format_prompt(template: str, instruction: str) -> str:
    """Render the spec's prompt template; training, evaluation and serving all go through here."""
    return template.format(instruction=instruction)


def normalize(text: str) -> str:
    """NFC, drop control characters (keep newlines), collapse spaces/tabs, strip the ends."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\t", " "))
    return _SPACES.sub(" ", _CONTROL.sub("", text)).strip()


def _check_config(cfg: Any) -> dict:
    """Validate the `data` slice up front so errors name the key, the value and what was allowed."""
    if not isinstance(cfg, dict):
        raise CurationError(f"data: expected a mapping, got {type(cfg).__name__}")

    def need(key: str, kind: type | tuple, what: str) -> Any:
        if key not in cfg:
            raise CurationError(f"data.{key}: missing (expected {what})")
        val = cfg[key]
        if not isinstance(val, kind) or isinstance(val, bool):
            raise CurationError(f"data.{key}: got {val!r}, expected {what}")
        return val

    need("source", (str, os.PathLike), "a path to a JSONL file")
    if cfg.get("format", "jsonl") != "jsonl":
        raise CurationError(f"data.format: got {cfg['format']!r}, only 'jsonl' is supported")
    cols = need("columns", dict, "a mapping {instruction: <field>, response: <field>}")
    for k in ("instruction", "response"):
        if not isinstance(cols.get(k), str):
            raise CurationError(f"data.columns.{k}: got {cols.get(k)!r}, expected a field name")
    template = need("prompt_template", str, "a string containing {instruction}")
    try:
        if "{instruction}" not in template:
            raise KeyError("instruction")
        format_prompt(template, "x")
    except (KeyError, IndexError, ValueError) as e:
        raise CurationError(f"data.prompt_template: {template!r} is not a valid template ({e!r}); "
                            "it must contain {instruction} and escape other braces as {{ }}") from None
    schema = need("response_schema", dict, "a JSON Schema object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise CurationError(f"data.response_schema: not a valid JSON Schema: {e.message}") from None
    label = cfg.get("label_field")
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else None
    if label is not None and (not isinstance(label, str) or (props is not None and label not in props)):
        allowed = f" (one of {sorted(props)})" if props else ""
        raise CurationError(f"data.label_field: got {label!r}, expected null or a response field{allowed}")
    split = need("split", dict, "a mapping {val: <fraction>, test: <fraction>}")
    for k in ("val", "test"):
        v = split.get(k)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
            raise CurationError(f"data.split.{k}: got {v!r}, expected a fraction in [0, 1)")
    if split["val"] + split["test"] >= 1:
        raise CurationError(f"data.split: val + test = {split['val'] + split['test']}, must leave room for train")
    max_chars = need("max_chars", int, "a positive integer")
    if max_chars <= 0:
        raise CurationError(f"data.max_chars: got {max_chars}, expected a positive integer")
    return cfg


def _split_of(digest: bytes, val: float, test: float) -> str:
    """Map a sha256 digest to [0, 1) and pick the split: test, then val, then train."""
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if u < test else "val" if u < test + val else "train"


def _canonical(obj: Any, schema: dict) -> str:
    """Serialise a response with keys in the schema's `properties` order (extras sorted after)."""
    props = schema.get("properties")
    if isinstance(obj, dict) and isinstance(props, dict):
        ordered = {k: obj[k] for k in props if k in obj}
        ordered.update({k: obj[k] for k in sorted(obj) if k not in ordered})
        obj = ordered
    return json.dumps(obj, ensure_ascii=False)


def _label_key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _write_atomic_text(path: Path, text: str) -> None:
    """Write a small file via temp + fsync + rename so readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary shared files
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_curation(data_cfg: dict, out_dir: Path, report_path: Path) -> dict:
    """Curate `data_cfg['source']` into out_dir/{train,val,test}.jsonl and write the report.

    Returns the report dict.  Raises CurationError for problems the user can fix.
    """
    cfg = _check_config(data_cfg)
    source = Path(cfg["source"])
    instr_col, resp_col = cfg["columns"]["instruction"], cfg["columns"]["response"]
    template, schema = cfg["prompt_template"], cfg["response_schema"]
    label_field, max_chars = cfg.get("label_field"), cfg["max_chars"]
    val, test = cfg["split"]["val"], cfg["split"]["test"]
    validator = jsonschema.validators.validator_for(schema)(schema)

    if not source.is_file():
        what = "is a directory" if source.is_dir() else "not found"
        raise CurationError(f"data.source: {source} {what} (expected a JSONL file; relative paths "
                            f"resolve against {Path.cwd()})")
    out_dir, report_path = Path(out_dir), Path(report_path)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        report_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CurationError(f"cannot create output folder: {e}") from None

    dropped = Counter({r: 0 for r in RULES})
    counts = Counter({s: 0 for s in SPLITS})
    labels: dict[str, Counter] = {s: Counter() for s in SPLITS}
    seen: dict[bytes, str] = {}  # instruction digest -> canonical response of the kept row
    sha = hashlib.sha256()
    n_input = 0
    tmps: dict[str, tuple[Any, str]] = {}
    try:
        for s in SPLITS:
            fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{s}.jsonl.", suffix=".tmp")
            os.chmod(tmp, 0o644)
            tmps[s] = (os.fdopen(fd, "w", encoding="utf-8", newline="\n"), tmp)
        try:
            f = open(source, "rb")
        except OSError as e:
            raise CurationError(f"data.source: cannot read {source}: {e.strerror or e}") from None
        with f:
            for lineno, raw in enumerate(f, 1):
                sha.update(raw)
                n_input += 1
                rule, row = _curate_line(raw, lineno, instr_col, resp_col, max_chars, validator, schema)
                if rule is None:
                    instr, resp, obj = row
                    digest = hashlib.sha256(instr.encode("utf-8")).digest()
                    if digest in seen:
                        rule = "duplicate" if seen[digest] == resp else "conflicting_duplicate"
                if rule is not None:
                    dropped[rule] += 1
                    continue
                seen[digest] = resp
                split = _split_of(digest, val, test)
                lab = obj.get(label_field) if label_field is not None and isinstance(obj, dict) else None
                rec = {"id": digest.hex()[:16], "prompt": format_prompt(template, instr),
                       "response": resp, "label": lab}
                tmps[split][0].write(json.dumps(rec, ensure_ascii=False) + "\n")
                counts[split] += 1
                if label_field is not None:
                    labels[split][_label_key(lab)] += 1
        kept, dropped_total = sum(counts.values()), sum(dropped.values())
        if kept + dropped_total != n_input:
            raise AssertionError(f"curation lost rows: kept {kept} + dropped {dropped_total} != input {n_input}")
        for s in SPLITS:
            fh, tmp = tmps[s]
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        for s in SPLITS:  # everything is complete: publish
            os.replace(tmps[s][1], out_dir / f"{s}.jsonl")
    except OSError as e:
        raise CurationError(f"I/O error while curating {source} into {out_dir}: {e}") from None
    finally:
        for fh, tmp in tmps.values():
            fh.close()
            Path(tmp).unlink(missing_ok=True)

    report = {
        "input": n_input, "kept": kept, "dropped": dict(dropped), "dropped_total": dropped_total,
        "splits": dict(counts), "labels": {s: dict(labels[s]) for s in SPLITS},
        "source": str(cfg["source"]), "source_sha256": sha.hexdigest(),
    }
    _write_atomic_text(report_path, json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return report


def _curate_line(raw: bytes, lineno: int, instr_col: str, resp_col: str, max_chars: int,
                 validator: Any, schema: dict) -> tuple[str | None, tuple[str, str, Any] | None]:
    """Apply the per-line rules; return (rule, None) for a drop or (None, (instr, resp, obj))."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8", None
    if lineno == 1:
        line = line.removeprefix("\ufeff")  # tolerate a byte-order mark
    if not line.strip():
        return "empty", None
    try:
        rec = json.loads(line)
    except ValueError:
        return "invalid_json", None
    if not isinstance(rec, dict):
        return "wrong_type", None
    if instr_col not in rec or resp_col not in rec:
        return "missing_field", None
    instr, resp = rec[instr_col], rec[resp_col]
    if not isinstance(instr, str) or not isinstance(resp, str):
        return "wrong_type", None
    instr = normalize(instr)
    if not instr:
        return "empty", None
    if len(instr) > max_chars:
        return "too_long", None
    try:
        obj = json.loads(resp)
    except ValueError:
        return "response_invalid", None
    if not validator.is_valid(obj):
        return "response_invalid", None
    return None, (instr, _canonical(obj, schema), obj)
