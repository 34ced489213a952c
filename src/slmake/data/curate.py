"""The curate stage's library: raw data in, train/val/test splits plus an audit trail out.

Pipeline (modules in this package, one job each):

  ingest     JSONL / CSV / Parquet files or folders, streamed; every record gets source + line + hash
  validate   a JSON Schema for the record shape -> malformed records go to quarantine
  shapes     instruction / alpaca / prompt_completion / chat / classification -> (instruction, response)
  normalize  NFC, whitespace, control characters
  pii        typed placeholders for e-mails, phones, IBANs, cards, IPs, configured patterns
  tokens     length filter (the spec's tokenizer, or an estimate)
  dedup      exact duplicates, conflicting responses, MinHash near-duplicate clusters, leakage check
  balance    per-label caps, train-only oversampling, negative-example share
  split      deterministic stratified split of whole near-duplicate clusters
  ledger     one row per input record, the quarantine file, atomic publishing
  card       the Markdown data card

Pass 1 streams the input once: each record is quarantined, dropped under one rule, or becomes a
*candidate*, whose output line is spooled to disk and whose few facts (id, label, response hash,
MinHash signature on disk) stay for pass 2.  Pass 2 decides duplicates, clusters, caps, splits and
copies on those facts; pass 3 streams the spool into the split files and the ledger.  Every
output is written to a temporary file and renamed only after every check passed (the row
invariant kept + dropped + quarantined == input, zero train/test leakage, the quarantine ceiling,
the negative share), so a failure never leaves partial splits behind.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from . import balance, card, config, dedup, ingest, split
from .errors import QUARANTINE_REASONS, RULES, CurationError
from .ledger import LedgerSpool, Staged, quarantine_row
from .normalize import normalize
from .pii import Scrubber
from .shapes import ShapeError, ShapeReader
from .tokens import TokenCounter
from .validate import RecordValidator, ResponseValidator

SPLITS = split.SPLITS
SIGNATURE_BATCH = 128
format_prompt = config.format_prompt

__all__ = ["CurationError", "QUARANTINE_REASONS", "RULES", "SPLITS", "format_prompt", "normalize", "run_curation"]


def _progress(total: int | None, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are a nicety
        return None
    return tqdm(total=total, desc=desc, unit="rec", disable=None, file=sys.stderr, mininterval=1.0)


class _Candidates:
    """Pass-1 facts about records still in the running (small, fixed-size per record)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.resp: list[int] = []     # response id (interned hash of the canonical response)
        self.label: list[int] = []    # label id, -1 = none
        self.neg = bytearray()
        self.hard = bytearray()
        self.first: dict[str, int] = {}           # record id -> first candidate with it
        self.groups: dict[str, list[int]] = {}    # record id -> all candidates with it (when > 1)
        self._resp_ids: dict[bytes, int] = {}
        self.labels: list[str] = []
        self._label_ids: dict[str, int] = {}

    def add(self, rid: str, response: str, label: str | None, neg: bool, hard: bool) -> int:
        i = len(self.ids)
        self.ids.append(rid)
        key = hashlib.blake2b(response.encode(), digest_size=12).digest()
        self.resp.append(self._resp_ids.setdefault(key, len(self._resp_ids)))
        if label is None:
            self.label.append(-1)
        else:
            lid = self._label_ids.get(label)
            if lid is None:
                lid = self._label_ids[label] = len(self.labels)
                self.labels.append(label)
            self.label.append(lid)
        self.neg.append(neg)
        self.hard.append(hard)
        if rid in self.first:
            self.groups.setdefault(rid, [self.first[rid]]).append(i)
        else:
            self.first[rid] = i
        return i

    def label_of(self, i: int) -> str | None:
        lid = self.label[i]
        return None if lid < 0 else self.labels[lid]


def run_curation(data_cfg: dict, out_dir: Path, report_path: Path, *, ledger_path: Path | None = None,
                 quarantine_path: Path | None = None, card_path: Path | None = None) -> dict:
    """Curate `data_cfg['source']` into out_dir/{train,val,test}.jsonl and write the report.

    Also writes the ledger (default: <report dir>/<report stem>_ledger.csv), the quarantine file
    (<report stem>_quarantine.jsonl) and the data card (<report dir>/data_card.md).  Returns the
    report dict.  Raises CurationError for problems the user can fix; nothing is published then
    (except the quarantine file when the quarantine ceiling was exceeded, to show what was wrong).
    """
    cfg = config.resolve(data_cfg)
    out_dir, report_path = Path(out_dir), Path(report_path)
    stem = report_path.stem
    ledger_path = Path(ledger_path) if ledger_path else report_path.with_name(f"{stem}_ledger.csv")
    quarantine_path = Path(quarantine_path) if quarantine_path else report_path.with_name(f"{stem}_quarantine.jsonl")
    card_path = Path(card_path) if card_path else report_path.with_name("data_card.md")
    sources = ingest.find_sources(cfg["source"], cfg["format"])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.curate-", suffix=".tmp"))
    except OSError as e:
        raise CurationError(f"cannot create output folder {out_dir}: {e}") from None
    outputs, qstage = Staged(), Staged()
    try:
        report = _curate(cfg, sources, out_dir, work, outputs, qstage, report_path, ledger_path,
                         quarantine_path, card_path)
        qstage.publish()
        outputs.publish()
        return report
    except OSError as e:
        raise CurationError(f"I/O error while curating {cfg['source']} into {out_dir}: {e}") from None
    finally:
        outputs.discard()
        qstage.discard()
        shutil.rmtree(work, ignore_errors=True)


def _curate(cfg: dict, sources: list[ingest.SourceFile], out_dir: Path, work: Path, outputs: Staged,
            qstage: Staged, report_path: Path, ledger_path: Path, quarantine_path: Path, card_path: Path) -> dict:
    # ---------------------------------------------------------------- set-up
    pii_cfg, near = cfg["pii"], cfg["dedup"]["near"]
    scrubber = Scrubber(pii_cfg["enabled"], pii_cfg["types"], pii_cfg["patterns"], pii_cfg["presidio"])
    excerpt_scrubber = Scrubber(pii_cfg["enabled"], pii_cfg["types"], pii_cfg["patterns"])
    records, responses, shapes = RecordValidator(cfg), ResponseValidator(cfg), ShapeReader(cfg)
    tokens = TokenCounter(cfg["filters"]["tokenizer"])
    max_tokens, max_chars, template = cfg["filters"]["max_tokens"], cfg["max_chars"], cfg["prompt_template"]
    drop_rules = [(r["name"], re.compile(r["regex"]), r["field"]) for r in cfg["filters"]["drop_rules"]]
    neg_sel, hard_sel = cfg["negatives"], cfg["balance"]["hard"]
    label_field = cfg["label_field"]
    hasher = dedup.MinHasher(near["num_perm"], near["shingle"])
    required = list(records.schema["required"])
    wanted = sorted(set(shapes.columns_used) | {s["field"] for s in (neg_sel, hard_sel) if s["field"]})

    dropped = Counter({r: 0 for r in RULES})
    dropped.update({r["name"]: 0 for r in cfg["filters"]["drop_rules"]})
    quarantined = Counter({r: 0 for r in QUARANTINE_REASONS})
    first_problems: list[str] = []
    labels_before: Counter = Counter()
    per_source: Counter = Counter()
    cand = _Candidates()
    qf = qstage.open(quarantine_path)
    ledger = LedgerSpool(work / "ledger.tsv")
    spool = open(work / "candidates.jsonl", "w", encoding="utf-8", newline="\n")
    sigs = dedup.SignatureFile(work / "signatures.u32", near["num_perm"])
    n_input = 0
    pending: list[str] = []  # instructions whose signatures are computed in batches
    bands, rows = dedup.lsh_params(near["threshold"], near["num_perm"])
    keys: list[np.ndarray] = []  # LSH band keys per batch (the signatures go to disk)

    def flush_signatures() -> None:
        batch = hasher.signatures(pending)
        sigs.append(batch)
        keys.append(dedup.band_keys(batch, bands, rows))
        pending.clear()

    def quarantine(raw: ingest.Raw, reason: str, detail: str | None) -> None:
        quarantined[reason] += 1
        excerpt = excerpt_scrubber.scrub(raw.excerpt) if raw.excerpt else raw.excerpt
        qf.write(quarantine_row(raw.source, raw.line, reason, detail, raw.content_hash, excerpt))
        ledger.final(raw.source, raw.line, raw.content_hash, "quarantined", reason)
        if len(first_problems) < 5:
            first_problems.append(f"{raw.source}:{raw.line}: {reason}: {detail}")

    def drop(raw: ingest.Raw, rule: str, rid: str = "") -> None:
        dropped[rule] += 1
        ledger.final(raw.source, raw.line, raw.content_hash, "dropped", rule, rid)

    # ---------------------------------------------------------------- pass 1: stream every record
    bar = _progress(None, "curate: read")
    try:
        for src in sources:
            for raw in ingest.read(src, cfg, required, wanted):
                n_input += 1
                per_source[src.display] += 1
                if bar is not None:
                    bar.update()
                if raw.kind == "quarantine":
                    quarantine(raw, raw.reason, raw.detail)
                    continue
                if raw.kind == "empty":
                    drop(raw, "empty")
                    continue
                rec = raw.record
                problem = records.check(rec)
                if problem is not None:
                    raw.excerpt = json.dumps(rec, ensure_ascii=False, default=str)[: ingest.EXCERPT]
                    quarantine(raw, *problem)
                    continue
                try:
                    instr, resp_raw, label = shapes.extract(rec)
                except ShapeError as e:
                    raw.excerpt = json.dumps(rec, ensure_ascii=False, default=str)[: ingest.EXCERPT]
                    quarantine(raw, e.reason, e.detail)
                    continue
                if resp_raw is None or (isinstance(resp_raw, str) and not resp_raw.strip()):
                    drop(raw, "empty_response")
                    continue
                resp_val, why = responses.parse(resp_raw)
                if label_field is not None and isinstance(resp_val, dict):
                    lv = resp_val.get(label_field)
                    label = normalize(lv) if isinstance(lv, str) else None if lv is None else json.dumps(lv)
                if label is not None:
                    labels_before[label] += 1
                instr = normalize(instr)
                if not instr:
                    drop(raw, "empty")
                    continue
                if why is not None:
                    drop(raw, "response_invalid")
                    continue
                if resp_val == "" or resp_val is None:
                    drop(raw, "empty_response")
                    continue
                instr = scrubber.scrub(instr)
                rid = hashlib.sha256(instr.encode("utf-8")).hexdigest()[:16]
                if len(instr) > max_chars:
                    drop(raw, "too_long", rid)
                    continue
                scrubbed = scrubber.scrub(resp_val) if isinstance(resp_val, str) else scrubber.scrub_json(resp_val)
                if scrubbed is resp_val or scrubbed == resp_val:  # unchanged: memoise on the raw text
                    resp = responses.canonical_cached(resp_raw, resp_val) if isinstance(resp_raw, str) \
                        else responses.canonical(resp_val)
                else:
                    resp = responses.canonical(scrubbed)
                resp_val = scrubbed
                if resp is None:
                    drop(raw, "response_invalid", rid)
                    continue
                prompt = format_prompt(template, instr)
                if max_tokens is not None and tokens.count(prompt) + tokens.count(resp) > max_tokens:
                    drop(raw, "too_many_tokens", rid)
                    continue
                rule = next((name for name, rx, field in drop_rules
                             if (field != "response" and rx.search(instr)) or (field != "instruction" and rx.search(resp))),
                            None)
                if rule is not None:
                    drop(raw, rule, rid)
                    continue
                i = cand.add(rid, resp, label, balance.selects(neg_sel, resp_val, label, rec),
                             balance.selects(hard_sel, resp_val, label, rec))
                spool.write(json.dumps({"id": rid, "prompt": prompt, "response": resp, "label": label},
                                       ensure_ascii=False) + "\n")
                pending.append(instr)
                if len(pending) == SIGNATURE_BATCH:
                    flush_signatures()
                ledger.pending(raw.source, raw.line, raw.content_hash, rid, i)
        flush_signatures()
    finally:
        if bar is not None:
            bar.close()
        spool.close()
        sigs.close()

    q_total = sum(quarantined.values())
    if n_input == 0:
        raise CurationError(f"data.source: {cfg['source']} has no records")
    ceiling = cfg["quarantine"]["max_share"]
    if q_total / n_input > ceiling:
        qf.flush()
        qstage.publish()
        raise CurationError(
            f"{q_total} of {n_input} records ({q_total / n_input:.1%}) are malformed, above the ceiling "
            f"data.quarantine.max_share = {ceiling:.1%}; nothing was published except {quarantine_path}.\n"
            f"  reasons: {dict((k, v) for k, v in quarantined.items() if v)}\n  first: "
            + "\n         ".join(first_problems))

    # ---------------------------------------------------------------- pass 2: decide
    n = len(cand.ids)
    fate: list[str | None] = [None] * n   # None = kept (so far)
    conflict_groups = conflict_records = 0
    for rid, members in cand.groups.items():
        resp_ids = [cand.resp[m] for m in members]
        if len(set(resp_ids)) > 1:
            conflict_groups += 1
            conflict_records += len(members)
        for m, f in dedup.resolve_conflicts(members, resp_ids, cfg["dedup"]["conflicts"]).items():
            fate[m] = f
    exact_dups = sum(1 for f in fate if f == "duplicate")

    sig_matrix = sigs.reader()
    band = np.concatenate(keys) if keys else np.zeros((0, bands), dtype=np.uint64)
    del keys
    alive = np.flatnonzero(np.array([f is None for f in fate], dtype=bool))
    pairs = dedup.similar_pairs(sig_matrix, band, alive, near["threshold"])
    root = dedup.clusters(n, pairs)
    sizes = np.bincount(root[alive], minlength=n) if n else np.zeros(0, dtype=np.int64)
    near_clusters = int(np.count_nonzero(sizes > 1))
    near_clustered = int(sizes[sizes > 1].sum())
    if near["action"] == "drop":
        for i in alive[root[alive] != alive].tolist():
            fate[i] = "near_duplicate"

    label_ids = np.array(cand.label, dtype=np.int64)
    alive = np.flatnonzero(np.array([f is None for f in fate], dtype=bool))
    for i in balance.caps(alive, label_ids, cand.ids, cfg["balance"]["max_per_label"], cfg["split"]["seed"]):
        fate[i] = "label_cap"

    kept_idx = np.flatnonzero(np.array([f is None for f in fate], dtype=bool))
    group_roots, group_of = np.unique(root[kept_idx], return_inverse=True)
    codes = split.assign([cand.ids[r] for r in group_roots.tolist()], [cand.label_of(r) for r in group_roots.tolist()],
                         np.bincount(group_of, minlength=len(group_roots)), cfg["split"]["val"],
                         cfg["split"]["test"], cfg["split"]["seed"], cfg["split"]["stratify"])
    split_code = np.full(n, -1, dtype=np.int8)  # -1: not kept
    split_code[kept_idx] = codes[group_of]
    train_idx = np.flatnonzero(split_code == 0)
    copies = balance.copies(train_idx, label_ids, np.frombuffer(bytes(cand.hard), dtype=np.uint8), cand.ids,
                            cfg["balance"]["min_per_label"], hard_sel["factor"], cfg["split"]["seed"], n)
    copies[split_code != 0] = 1
    for f in fate:
        if f is not None:
            dropped[f] += 1

    # negatives: share of train rows (with copies) and of kept records
    neg = np.frombuffer(bytes(cand.neg), dtype=np.uint8).astype(bool)
    train_rows = int(copies[train_idx].sum())
    share_train = int(copies[train_idx][neg[train_idx]].sum()) / train_rows if train_rows else 0.0
    share_kept = float(neg[kept_idx].mean()) if len(kept_idx) else 0.0
    neg_ok = neg_sel["field"] is None or share_train >= neg_sel["min_share"]
    negatives = {"field": neg_sel["field"], "values": neg_sel["values"], "min_share": neg_sel["min_share"],
                 "on_violation": neg_sel["on_violation"], "share_train": round(share_train, 4),
                 "share_kept": round(share_kept, 4), "ok": neg_ok}

    leakage = _leakage(cand.ids, kept_idx, split_code, sig_matrix, band, near["threshold"])
    del sig_matrix, band

    # ---------------------------------------------------------------- pass 3: write
    handles = {s: outputs.open(out_dir / f"{s}.jsonl") for s in SPLITS}
    rows_written = Counter({s: 0 for s in SPLITS})
    records_per_split = Counter({s: 0 for s in SPLITS})
    labels_after: dict[str, Counter] = {s: Counter() for s in SPLITS}
    with open(work / "candidates.jsonl", encoding="utf-8", newline="\n") as f:
        for i, line in enumerate(f):
            code = int(split_code[i])
            if code < 0:
                continue
            s, k = SPLITS[code], int(copies[i])
            handles[s].write(line * k)
            rows_written[s] += k
            records_per_split[s] += 1
            lab = cand.label_of(i)
            if lab is not None:
                labels_after[s][lab] += k

    def fate_of(i: int) -> tuple[str, str, str, int]:
        code = int(split_code[i])
        if code >= 0:
            return "kept", SPLITS[code], "", int(copies[i])
        return "dropped", "", fate[i], 0

    totals = ledger.write_ledger(outputs.open(ledger_path), fate_of)

    kept, dropped_total = int(len(kept_idx)), sum(dropped.values())
    invariant_ok = (kept + dropped_total + q_total == n_input and totals["kept"] == kept
                    and totals["dropped"] == dropped_total and totals["quarantined"] == q_total
                    and sum(records_per_split.values()) == kept)
    if not invariant_ok:  # a bug, not bad data: refuse to publish rather than lose rows silently
        raise CurationError(f"internal error: kept {kept} + dropped {dropped_total} + quarantined {q_total} "
                            f"!= input {n_input} (ledger: {totals}); nothing was published")
    if kept == 0:
        raise CurationError(f"no records left after curation (input {n_input}; dropped "
                            f"{dict((k, v) for k, v in dropped.items() if v)}; quarantined "
                            f"{dict((k, v) for k, v in quarantined.items() if v)}): check data.columns, "
                            "data.response_schema and the filters")
    if not leakage["ok"]:
        raise CurationError(f"leakage check failed: train/test (or val) overlap after curation: {leakage['pairs']}")
    warnings = []
    if not neg_ok:
        msg = (f"negative examples ({neg_sel['field']} in {neg_sel['values']}) are {share_train:.1%} of train "
               f"rows, below data.negatives.min_share = {neg_sel['min_share']:.1%}")
        if neg_sel["on_violation"] == "fail":
            raise CurationError(msg)
        warnings.append(msg)

    report = {
        "input": n_input, "kept": kept, "dropped": dict(dropped), "dropped_total": dropped_total,
        "quarantined": dict(quarantined), "quarantined_total": q_total, "invariant_ok": invariant_ok,
        "splits": dict(rows_written), "records_per_split": dict(records_per_split),
        "oversampled_rows": rows_written["train"] - records_per_split["train"],
        "labels": {s: dict(sorted(labels_after[s].items())) for s in SPLITS},
        "labels_before": dict(sorted(labels_before.items())),
        "pii": {"counts": dict(scrubber.counts), "presidio": scrubber.presidio_status},
        "dedup": {"exact_duplicates": exact_dups, "conflict_groups": conflict_groups,
                  "conflict_records": conflict_records, "conflict_policy": cfg["dedup"]["conflicts"],
                  "near_clusters": near_clusters, "near_clustered_records": near_clustered,
                  "near_action": near["action"], "near_threshold": near["threshold"],
                  "num_perm": near["num_perm"], "lsh_bands": bands, "lsh_rows": rows},
        "leakage": leakage, "negatives": negatives,
        "tokens": {"method": tokens.method, "max_tokens": max_tokens},
        "warnings": warnings,
        "source": str(cfg["source"]), "source_sha256": _sources_sha(sources),
        "sources": [{"path": s.display, "format": s.format, "records": per_source[s.display],
                     "sha256": ingest.file_sha256(s.path)} for s in sources],
        "outputs": {"ledger": str(ledger_path), "quarantine": str(quarantine_path), "card": str(card_path)},
    }
    text = json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    outputs.open(report_path).write(text)
    outputs.open(card_path).write(card.render(report, cfg))
    return report


def _sources_sha(sources: list[ingest.SourceFile]) -> str:
    if len(sources) == 1:
        return ingest.file_sha256(sources[0].path)
    h = hashlib.sha256()
    for s in sources:
        h.update(f"{s.display}\0{ingest.file_sha256(s.path)}\n".encode())
    return h.hexdigest()


def _leakage(ids: list[str], kept: np.ndarray, split_code: np.ndarray, sigs: np.ndarray, band: np.ndarray,
             threshold: float) -> dict[str, Any]:
    """Overlap between splits among kept records: the same instruction (exact), or a MinHash pair
    at or above the near-duplicate threshold (near).  Must be zero after curation."""
    names = (("train", "test"), ("train", "val"), ("val", "test"))
    result = {f"{a}_{b}": {"exact": 0, "near": 0} for a, b in names}

    def bump(sa: int, sb: int, kind: str) -> None:
        a, b = sorted((SPLITS[sa], SPLITS[sb]), key=SPLITS.index)
        result[f"{a}_{b}"][kind] += 1

    seen: dict[str, int] = {}
    for i in kept.tolist():
        code = int(split_code[i])
        other = seen.setdefault(ids[i], code)
        if other != code:
            bump(other, code, "exact")
    pairs = dedup.similar_pairs(sigs, band, kept, threshold)
    for a, b in pairs.tolist():
        if split_code[a] != split_code[b]:
            bump(int(split_code[a]), int(split_code[b]), "near")
    ok = all(v["exact"] == 0 and v["near"] == 0 for v in result.values())
    return {"pairs": result, "ok": ok}
