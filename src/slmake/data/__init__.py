"""Data preparation: raw JSONL/CSV/Parquet in, clean deterministic splits and an audit trail out.

One module per job (curate.py runs them: ingest, normalize, dedup, pii, split, balance, ledger,
card); this package file imports none of them, so `slmake.data.config` stays light.
"""
