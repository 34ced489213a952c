"""The curate stage's library: raw data in, train/val/test splits plus an audit trail out.

Four passes, each a function that hands the next a small typed record:

  read    streams every record of every source once: ingest -> validate -> shapes -> normalize ->
          pii -> tokens -> drop rules (`Examiner`).  Each record is quarantined, dropped under one
          rule, or becomes a candidate: its output line is spooled to disk and only its few facts
          (id, label, response hash, MinHash signature on disk) stay in memory  -> `Read`
  decide  duplicates, conflicts, near-duplicate clusters, label caps, splits, oversampling, the
          negative share and the leakage check, on those facts alone                -> `Decided`
  write   streams the spool into the split files and the ledger                      -> `Written`
  report  checks the invariants (kept + dropped + quarantined == input, zero leakage, the
          negative share), then writes the report and the data card

The records are in records.py; the other modules of this package do one job each (ingest, validate,
shapes, normalize, pii, tokens, dedup, balance, split, ledger, card).  Every output is written to a
temporary file and renamed only after every check passed, so a failure never leaves partial splits
behind.
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
from typing import Any, TextIO

import numpy as np

from ..prompt import format_prompt
from . import balance, card, config, dedup, ingest, sources, split
from .errors import QUARANTINE_REASONS, RULES, CurationError
from .ledger import LedgerSpool, Staged, quarantine_row
from .ner import NerUnavailable
from .normalize import normalize
from .pii import Scrubber, name_slots, names_warning
from .raw import EXCERPT, Raw
from .records import Candidate, Candidates, Decided, Dropped, Outputs, Quarantined, Read, Written
from .shapes import ShapeError, ShapeReader
from .tokens import TokenCounter
from .validate import RecordValidator, ResponseValidator

SPLITS = split.SPLITS
SIGNATURE_BATCH = 128

__all__ = ["QUARANTINE_REASONS", "RULES", "SPLITS", "CurationError", "normalize", "run_curation"]


# ---------------------------------------------------------------------------- entry point

def run_curation(data_cfg: dict, out_dir: Path, report_path: Path, *, ledger_path: Path | None = None,
                 quarantine_path: Path | None = None, card_path: Path | None = None) -> dict:
    """Curate `data_cfg['source']` into out_dir/{train,val,test}.jsonl and write the report.

    Also writes the ledger (default: <report dir>/<report stem>_ledger.csv), the quarantine file
    (<report stem>_quarantine.jsonl) and the data card (<report dir>/data_card.md).  Returns the
    report dict.  Raises CurationError for problems the user can fix; nothing is published then
    (except the quarantine file when the quarantine ceiling was exceeded, to show what was wrong).
    """
    cfg = config.resolve(data_cfg)
    report_path = Path(report_path)
    stem = report_path.stem
    paths = Outputs(Path(out_dir), report_path,
                    Path(ledger_path) if ledger_path else report_path.with_name(f"{stem}_ledger.csv"),
                    Path(quarantine_path) if quarantine_path else report_path.with_name(f"{stem}_quarantine.jsonl"),
                    Path(card_path) if card_path else report_path.with_name("data_card.md"))
    files = sources.find_sources(cfg["source"], cfg["format"])
    try:
        paths.out_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=paths.out_dir.parent, prefix=f".{paths.out_dir.name}.curate-",
                                     suffix=".tmp"))
    except OSError as e:
        raise CurationError(f"cannot create output folder {paths.out_dir}: {e}") from None
    outputs, qstage = Staged(), Staged()
    try:
        qfile = qstage.open(paths.quarantine)
        seen = read(cfg, files, work, qfile)
        check_quarantine(cfg, seen, qstage, paths.quarantine)
        decided = decide(cfg, seen)
        written = write(seen, decided, outputs, paths)
        report = build_report(cfg, files, seen, decided, written, paths)
        outputs.open(paths.report).write(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        outputs.open(paths.card).write(card.render(report, cfg))
        qstage.publish()
        outputs.publish()
        return report
    except OSError as e:
        raise CurationError(f"I/O error while curating {cfg['source']} into {paths.out_dir}: {e}") from None
    finally:
        outputs.discard()
        qstage.discard()
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------- read

NAME_SLOT_SAMPLE = 1000   # records whose keys are looked at for name-like fields

class Examiner:
    """The per-record rules of the read pass, in order: one raw record -> its outcome."""

    def __init__(self, cfg: dict):
        pii = cfg["pii"]
        try:
            self.scrubber = Scrubber.from_config(pii)
        except NerUnavailable as e:  # `person` in data.pii.types and no NER model here
            raise CurationError(f"data.pii.types: person: {e}") from None
        # fields that look like they hold person names (guest_name, slots.customer...), sampled
        # from the first records and the response schema: the data card warns when nothing scrubs them
        self.name_slots: set[str] = name_slots(cfg["response_schema"].get("properties") or {})
        self.slot_sample = NAME_SLOT_SAMPLE
        self.records, self.responses, self.shapes = RecordValidator(cfg), ResponseValidator(cfg), ShapeReader(cfg)
        self.tokens = TokenCounter(cfg["filters"]["tokenizer"])
        self.max_tokens, self.max_chars = cfg["filters"]["max_tokens"], cfg["max_chars"]
        self.template, self.label_field = cfg["prompt_template"], cfg["label_field"]
        if self.template == "chat_template":   # stages/curate.py passes the check stage's rendering
            raise CurationError("data.prompt_template=chat_template: render it with the model first "
                                "(slmake.chat_template.resolved; the curate stage does)")
        self.drop_rules = [(r["name"], re.compile(r["regex"]), r["field"]) for r in cfg["filters"]["drop_rules"]]
        self.neg_sel, self.hard_sel = cfg["negatives"], cfg["balance"]["hard"]
        self.required = list(self.records.schema["required"])  # columns a CSV header / Parquet schema must have
        self.wanted = sorted(set(self.shapes.columns_used)     # columns read at all
                             | {s["field"] for s in (self.neg_sel, self.hard_sel) if s["field"]})

    def examine(self, raw: Raw) -> Quarantined | Dropped | Candidate:
        if self.slot_sample and raw.kind != "quarantine" and isinstance(raw.record, dict):
            self.slot_sample -= 1
            self.name_slots |= name_slots(raw.record)
        if raw.kind == "quarantine":
            return Quarantined(raw.reason, raw.detail, raw.excerpt)
        if raw.kind == "empty":
            return Dropped("empty")
        rec = raw.record
        problem = self.records.check(rec)
        if problem is None:
            try:
                instr, resp_raw, label = self.shapes.extract(rec)
            except ShapeError as e:
                problem = e.reason, e.detail
        if problem is not None:
            reason, detail = problem
            detail = f"{raw.where}: {detail}" if raw.where else detail   # a JSON array's record: its line too
            return Quarantined(reason, detail, json.dumps(rec, ensure_ascii=False, default=str)[:EXCERPT])
        if resp_raw is None or (isinstance(resp_raw, str) and not resp_raw.strip()):
            return Dropped("empty_response")
        resp_val, why = self.responses.parse(resp_raw)
        if self.label_field is not None and isinstance(resp_val, dict):
            lv = resp_val.get(self.label_field)
            label = normalize(lv) if isinstance(lv, str) else None if lv is None else json.dumps(lv)
        instr = normalize(instr)
        if not instr:
            return Dropped("empty", label=label)
        if why is not None:
            return Dropped("response_invalid", label=label)
        if resp_val == "" or resp_val is None:
            return Dropped("empty_response", label=label)
        instr = self.scrubber.scrub(instr)
        rid = hashlib.sha256(instr.encode("utf-8")).hexdigest()[:16]
        if len(instr) > self.max_chars:
            return Dropped("too_long", rid, label)
        resp = self._canonical_response(resp_raw, resp_val)
        if resp is None:
            return Dropped("response_invalid", rid, label)
        resp_val, resp = resp
        prompt = format_prompt(self.template, instr)
        if self.max_tokens is not None and self.tokens.count(prompt) + self.tokens.count(resp) > self.max_tokens:
            return Dropped("too_many_tokens", rid, label)
        rule = next((name for name, rx, where in self.drop_rules
                     if (where != "response" and rx.search(instr)) or (where != "instruction" and rx.search(resp))),
                    None)
        if rule is not None:
            return Dropped(rule, rid, label)
        line = json.dumps({"id": rid, "prompt": prompt, "response": resp, "label": label}, ensure_ascii=False) + "\n"
        return Candidate(rid, instr, line, resp, label, balance.selects(self.neg_sel, resp_val, label, rec),
                         balance.selects(self.hard_sel, resp_val, label, rec))

    def _canonical_response(self, resp_raw: Any, resp_val: Any) -> tuple[Any, str] | None:
        """(scrubbed value, its canonical spelling), or None when it does not satisfy the schema."""
        scrubbed = self.scrubber.scrub(resp_val) if isinstance(resp_val, str) else self.scrubber.scrub_json(resp_val)
        if scrubbed is resp_val or scrubbed == resp_val:  # unchanged: memoise on the raw text
            resp = self.responses.canonical_cached(resp_raw, resp_val) if isinstance(resp_raw, str) \
                else self.responses.canonical(resp_val)
        else:
            resp = self.responses.canonical(scrubbed)
        return None if resp is None else (scrubbed, resp)


def read(cfg: dict, files: list[sources.SourceFile], work: Path, qfile: TextIO) -> Read:
    """Stream every record once; quarantine and drop what the per-record rules reject, spool the rest."""
    pii, near = cfg["pii"], cfg["dedup"]["near"]
    examiner = Examiner(cfg)
    excerpt_scrubber = Scrubber.from_config(pii, presidio=False)
    hasher = dedup.MinHasher(near["num_perm"], near["shingle"])
    bands, rows = dedup.lsh_params(near["threshold"], near["num_perm"])
    seen = Read(n_input=0, per_source=Counter(), dropped=Counter({r: 0 for r in RULES}),
                quarantined=Counter({r: 0 for r in QUARANTINE_REASONS}), first_problems=[],
                labels_before=Counter(), candidates=Candidates(), spool=work / "candidates.jsonl",
                signatures=dedup.SignatureFile(work / "signatures.u32", near["num_perm"]),
                band_keys=np.zeros((0, bands), dtype=np.uint64), ledger=LedgerSpool(work / "ledger.tsv"),
                scrubber=examiner.scrubber, token_method=examiner.tokens.method, name_slots=examiner.name_slots)
    seen.dropped.update({r["name"]: 0 for r in cfg["filters"]["drop_rules"]})
    pending: list[str] = []  # instructions whose signatures are computed in batches
    keys: list[np.ndarray] = []

    def flush_signatures() -> None:
        batch = hasher.signatures(pending)
        seen.signatures.append(batch)
        keys.append(dedup.band_keys(batch, bands, rows))
        pending.clear()

    bar = _progress("curate: read")
    spool = open(seen.spool, "w", encoding="utf-8", newline="\n")
    try:
        for src in files:
            for raw in ingest.read(src, cfg, examiner.required, examiner.wanted):
                seen.n_input += 1
                seen.per_source[src.display] += 1
                if bar is not None:
                    bar.update()
                out = examiner.examine(raw)
                if isinstance(out, Candidate):
                    i = seen.candidates.add(out)
                    if out.label is not None:
                        seen.labels_before[out.label] += 1
                    spool.write(out.line)
                    pending.append(out.instruction)
                    if len(pending) == SIGNATURE_BATCH:
                        flush_signatures()
                    seen.ledger.pending(raw.source, raw.line, raw.content_hash, out.rid, i)
                elif isinstance(out, Dropped):
                    if out.label is not None:
                        seen.labels_before[out.label] += 1
                    seen.dropped[out.rule] += 1
                    seen.ledger.final(raw.source, raw.line, raw.content_hash, "dropped", out.rule, out.rid)
                else:
                    seen.quarantined[out.reason] += 1
                    excerpt = excerpt_scrubber.scrub(out.excerpt) if out.excerpt else out.excerpt
                    qfile.write(quarantine_row(raw.source, raw.line, out.reason, out.detail, raw.content_hash, excerpt))
                    seen.ledger.final(raw.source, raw.line, raw.content_hash, "quarantined", out.reason)
                    if len(seen.first_problems) < 5:
                        seen.first_problems.append(f"{raw.source}:{raw.line}: {out.reason}: {out.detail}")
        flush_signatures()
    finally:
        if bar is not None:
            bar.close()
        spool.close()
        seen.signatures.close()
    if keys:
        seen.band_keys = np.concatenate(keys)
    return seen


def check_quarantine(cfg: dict, seen: Read, qstage: Staged, quarantine_path: Path) -> None:
    """Fail on no input, or on more malformed records than data.quarantine.max_share allows; then
    the quarantine file (and nothing else) is published, to show what was wrong."""
    if seen.n_input == 0:
        raise CurationError(f"data.source: {cfg['source']} has no records")
    q_total, ceiling = seen.quarantined_total, cfg["quarantine"]["max_share"]
    if q_total / seen.n_input > ceiling:
        qstage.publish()
        raise CurationError(
            f"{q_total} of {seen.n_input} records ({q_total / seen.n_input:.1%}) are malformed, above the ceiling "
            f"data.quarantine.max_share = {ceiling:.1%}; nothing was published except {quarantine_path}.\n"
            f"  reasons: {_nonzero(seen.quarantined)}\n  first: "
            + "\n         ".join(seen.first_problems))


def _progress(desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are a nicety
        return None
    return tqdm(desc=desc, unit="rec", disable=None, file=sys.stderr, mininterval=1.0)


# ---------------------------------------------------------------------------- decide

def decide(cfg: dict, seen: Read) -> Decided:
    """Fates, splits and copies of the candidates: exact and conflicting duplicates, near-duplicate
    clusters (grouped or dropped), label caps, grouped stratified splits, train oversampling."""
    cand, near, hard = seen.candidates, cfg["dedup"]["near"], cfg["balance"]["hard"]
    n = len(cand.ids)
    fate: list[str | None] = [None] * n   # None = kept (so far)
    conflict_groups = conflict_records = 0
    for members in cand.groups.values():
        resp_ids = [cand.resp[m] for m in members]
        if len(set(resp_ids)) > 1:
            conflict_groups += 1
            conflict_records += len(members)
        for m, f in dedup.resolve_conflicts(members, resp_ids, cfg["dedup"]["conflicts"]).items():
            fate[m] = f

    sigs = seen.signatures.reader()
    alive = _alive(fate)
    pairs = dedup.similar_pairs(sigs, seen.band_keys, alive, near["threshold"])
    root = dedup.clusters(n, pairs)
    sizes = np.bincount(root[alive], minlength=n) if n else np.zeros(0, dtype=np.int64)
    if near["action"] == "drop":
        for i in alive[root[alive] != alive].tolist():
            fate[i] = "near_duplicate"

    label_ids = np.array(cand.label, dtype=np.int64)
    for i in balance.caps(_alive(fate), label_ids, cand.ids, cfg["balance"]["max_per_label"], cfg["split"]["seed"]):
        fate[i] = "label_cap"

    kept = _alive(fate)
    group_roots, group_of = np.unique(root[kept], return_inverse=True)
    roots = group_roots.tolist()
    codes = split.assign([cand.ids[r] for r in roots], [cand.label_of(r) for r in roots],
                         np.bincount(group_of, minlength=len(roots)), cfg["split"]["val"],
                         cfg["split"]["test"], cfg["split"]["seed"], cfg["split"]["stratify"])
    split_code = np.full(n, -1, dtype=np.int8)  # -1: not kept
    split_code[kept] = codes[group_of]
    train = np.flatnonzero(split_code == 0)
    copies = balance.copies(train, label_ids, np.frombuffer(bytes(cand.hard), dtype=np.uint8), cand.ids,
                            cfg["balance"]["min_per_label"], hard["factor"], cfg["split"]["seed"], n)
    copies[split_code != 0] = 1

    dedup_stats = {"exact_duplicates": sum(1 for f in fate if f == "duplicate"),
                   "conflict_groups": conflict_groups, "conflict_records": conflict_records,
                   "near_clusters": int(np.count_nonzero(sizes > 1)),
                   "near_clustered_records": int(sizes[sizes > 1].sum())}
    neg = np.frombuffer(bytes(cand.neg), dtype=np.uint8).astype(bool)
    return Decided(fate, split_code, copies, kept, len(roots), dedup_stats,
                   balance.negatives(cfg["negatives"], neg, kept, train, copies),
                   split.leakage(cand.ids, kept, split_code, sigs, seen.band_keys, near["threshold"]))


def _alive(fate: list[str | None]) -> np.ndarray:
    return np.flatnonzero(np.array([f is None for f in fate], dtype=bool))


# ---------------------------------------------------------------------------- write

def write(seen: Read, decided: Decided, outputs: Staged, paths: Outputs) -> Written:
    """Stream the spool into the split files (train rows `copies` times) and the ledger."""
    handles = {s: outputs.open(paths.out_dir / f"{s}.jsonl") for s in SPLITS}
    done = Written(Counter({s: 0 for s in SPLITS}), Counter({s: 0 for s in SPLITS}),
                   {s: Counter() for s in SPLITS}, {})
    split_code, copies = decided.split_code, decided.copies
    with open(seen.spool, encoding="utf-8", newline="\n") as f:
        for i, line in enumerate(f):
            code = int(split_code[i])
            if code < 0:
                continue
            s, k = SPLITS[code], int(copies[i])
            handles[s].write(line * k)
            done.rows[s] += k
            done.records[s] += 1
            lab = seen.candidates.label_of(i)
            if lab is not None:
                done.labels[s][lab] += k

    def fate_of(i: int) -> tuple[str, str, str, int]:
        code = int(split_code[i])
        if code >= 0:
            return "kept", SPLITS[code], "", int(copies[i])
        return "dropped", "", decided.fate[i], 0

    done.ledger_totals = seen.ledger.write_ledger(outputs.open(paths.ledger), fate_of)
    return done


# ---------------------------------------------------------------------------- report

def build_report(cfg: dict, files: list[sources.SourceFile], seen: Read, decided: Decided, written: Written,
                 paths: Outputs) -> dict:
    """Check the invariants (raise CurationError when one fails) and return the report."""
    dropped = Counter(seen.dropped)
    for f in decided.fate:
        if f is not None:
            dropped[f] += 1
    n_input, q_total = seen.n_input, seen.quarantined_total
    kept, dropped_total = len(decided.kept), sum(dropped.values())
    totals = written.ledger_totals
    invariant_ok = (kept + dropped_total + q_total == n_input and totals["kept"] == kept
                    and totals["dropped"] == dropped_total and totals["quarantined"] == q_total
                    and sum(written.records.values()) == kept)
    if not invariant_ok:  # a bug, not bad data: refuse to publish rather than lose rows silently
        raise CurationError(f"internal error: kept {kept} + dropped {dropped_total} + quarantined {q_total} "
                            f"!= input {n_input} (ledger: {totals}); nothing was published")
    if kept == 0:
        raise CurationError(f"no records left after curation (input {n_input}; dropped {_nonzero(dropped)}; "
                            f"quarantined {_nonzero(seen.quarantined)}): check data.columns, "
                            "data.response_schema and the filters")
    if not decided.leakage["ok"]:
        raise CurationError(f"leakage check failed: train/test (or val) overlap after curation: "
                            f"{decided.leakage['pairs']}")
    warnings = []
    neg = decided.negatives
    if not neg["ok"]:
        msg = (f"negative examples ({neg['field']} in {neg['values']}) are {neg['share_train']:.1%} of train "
               f"rows, below data.negatives.min_share = {neg['min_share']:.1%}")
        if neg["on_violation"] == "fail":
            raise CurationError(msg)
        warnings.append(msg)
    names = names_warning(seen.name_slots, seen.scrubber)
    if names:
        warnings.append(names)
    warnings += split.empty_splits(written.records, cfg["split"]["val"], cfg["split"]["test"], decided.groups,
                                   n_input, {**dropped, **seen.quarantined})

    near = cfg["dedup"]["near"]
    bands, rows = dedup.lsh_params(near["threshold"], near["num_perm"])
    return {
        "input": n_input, "kept": kept, "dropped": dict(dropped), "dropped_total": dropped_total,
        "quarantined": dict(seen.quarantined), "quarantined_total": q_total, "invariant_ok": invariant_ok,
        "splits": dict(written.rows), "records_per_split": dict(written.records),
        "oversampled_rows": written.rows["train"] - written.records["train"],
        "labels": {s: dict(sorted(written.labels[s].items())) for s in SPLITS},
        "labels_before": dict(sorted(seen.labels_before.items())),
        "pii": {"counts": dict(seen.scrubber.counts), "presidio": seen.scrubber.presidio_status},
        "dedup": {**decided.dedup, "conflict_policy": cfg["dedup"]["conflicts"],
                  "near_action": near["action"], "near_threshold": near["threshold"],
                  "num_perm": near["num_perm"], "lsh_bands": bands, "lsh_rows": rows},
        "leakage": decided.leakage, "negatives": neg,
        "tokens": {"method": seen.token_method, "max_tokens": cfg["filters"]["max_tokens"]},
        "warnings": warnings,
        "source": cfg["source"] if isinstance(cfg["source"], (list, dict)) else str(cfg["source"]),
        "source_sha256": _sources_sha(files),
        "sources": [{"path": s.display, "format": s.format, "records": seen.per_source[s.display],
                     "sha256": sources.sha256(s)} for s in files],
        "outputs": {"ledger": str(paths.ledger), "quarantine": str(paths.quarantine), "card": str(paths.card)},
    }


def _nonzero(counts: Counter) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def _sources_sha(files: list[sources.SourceFile]) -> str:
    if len(files) == 1:
        return sources.sha256(files[0])
    h = hashlib.sha256()
    for s in files:
        h.update(f"{s.display}\0{sources.sha256(s)}\n".encode())
    return h.hexdigest()
