"""The data card: a Markdown summary of one curation run, rendered from its report."""

from __future__ import annotations

from .split import SPLITS


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f} %" if d else "-"


def render(report: dict, cfg: dict) -> str:
    r = report
    lines = [f"# Data card: {cfg['name']}", ""]
    if r["warnings"]:
        lines += ["## Warnings", "", *[f"- **{w}**" for w in r["warnings"]], ""]
    card = cfg.get("card") or {}
    if card.get("description"):
        lines += [card["description"].strip(), ""]
    lines += ["## Source", ""]
    lines += _table(["file", "format", "records", "sha256"],
                    [[f"`{s['path']}`", s["format"], s["records"], f"`{s['sha256'][:16]}…`"] for s in r["sources"]])
    lines += [""]
    if card.get("license"):
        lines += [f"**Licence:** {card['license'].strip()}", ""]
    if card.get("citation"):
        lines += ["**Cite:**", "", "```", card["citation"].strip(), "```", ""]
    lines += [f"Shape `{cfg['shape']}`, responses `{cfg['response_format']}`; "
              f"prompt template `{cfg['prompt_template']!r}`.", ""]

    n = r["input"]
    lines += ["## Accounting", "",
              f"Every input record is accounted for: **{r['kept']} kept + {r['dropped_total']} dropped + "
              f"{r['quarantined_total']} quarantined = {n} input** "
              f"({'checked' if r['invariant_ok'] else 'VIOLATED'}). The ledger has one row per input record.", ""]
    lines += _table(["fate", "records", "share"],
                    [["kept", r["kept"], _pct(r["kept"], n)], ["dropped", r["dropped_total"], _pct(r["dropped_total"], n)],
                     ["quarantined", r["quarantined_total"], _pct(r["quarantined_total"], n)]])
    lines += ["", "### Dropped, by rule", ""]
    rows = [[k, v] for k, v in r["dropped"].items() if v]
    lines += _table(["rule", "records"], rows) if rows else ["None."]
    lines += ["", "### Quarantined (malformed), by reason", ""]
    rows = [[k, v] for k, v in r["quarantined"].items() if v]
    lines += _table(["reason", "records"], rows) if rows else ["None."]
    lines += ["", f"Ceiling: {cfg['quarantine']['max_share']:.1%} of input.", ""]

    lines += ["## Splits", ""]
    lines += _table(["split", "records", "rows written (with oversampling)"],
                    [[s, r["records_per_split"][s], r["splits"][s]] for s in SPLITS])
    lines += ["", f"Stratified by label: {cfg['split']['stratify']}; seed {cfg['split']['seed']}; "
              f"near-duplicate clusters are never split.", ""]

    before, after = r["labels_before"], r["labels"]
    if before or any(after[s] for s in SPLITS):
        lines += ["## Labels", "", "Before: every record that parsed; after: rows in each split.", ""]
        names = sorted(set(before) | {k for s in SPLITS for k in after[s]})
        lines += _table(["label", "before", *SPLITS],
                        [[f"`{k}`", before.get(k, 0), *[after[s].get(k, 0) for s in SPLITS]] for k in names])
        lines += [""]
    neg = r["negatives"]
    if neg["field"] is not None:
        lines += ["## Negative examples", "",
                  f"`{neg['field']}` in {neg['values']}: {neg['share_train']:.1%} of train rows "
                  f"({neg['share_kept']:.1%} of kept records); required ≥ {neg['min_share']:.1%} "
                  f"({'ok' if neg['ok'] else 'BELOW (' + neg['on_violation'] + ')'}).", ""]

    lines += ["## PII scrubbed", ""]
    pii = r["pii"]
    rows = [[f"`{k}`", v] for k, v in pii["counts"].items()]
    lines += _table(["type", "replacements"], rows) if rows else ["Scrubbing is off."]
    lines += ["", f"Deeper detection (presidio): {pii['presidio']}.", ""]

    d = r["dedup"]
    lines += ["## Duplicates", "",
              f"- exact duplicates dropped: {d['exact_duplicates']}",
              f"- conflicting responses: {d['conflict_groups']} inputs, {d['conflict_records']} records "
              f"(policy `{d['conflict_policy']}`)",
              f"- near-duplicate clusters (MinHash, Jaccard ≥ {d['near_threshold']}, {d['num_perm']} perms, "
              f"{d['lsh_bands']}×{d['lsh_rows']} bands): {d['near_clusters']} clusters with "
              f"{d['near_clustered_records']} records (action `{d['near_action']}`)", ""]

    leak = r["leakage"]
    lines += ["## Leakage check", ""]
    lines += _table(["pair", "exact", "near-duplicate"],
                    [[k.replace("_", "/"), v["exact"], v["near"]] for k, v in leak["pairs"].items()])
    lines += ["", f"Result: {'**0 overlap** (pass)' if leak['ok'] else '**OVERLAP** (fail)'}.", ""]
    lines += ["## Filters", "", f"- length: {r['tokens']['method']}; max tokens (prompt + response): "
              f"{r['tokens']['max_tokens']}; max instruction chars: {cfg['max_chars']}"]
    for rule in cfg["filters"]["drop_rules"]:
        lines.append(f"- drop rule `{rule['name']}` on {rule['field']}: `{rule['regex']}`")
    lines += [""]
    return "\n".join(lines)
