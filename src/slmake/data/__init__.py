"""Data preparation: raw JSONL/CSV/Parquet in, clean deterministic splits and an audit trail out."""

from slmake.data.curate import CurationError, format_prompt, run_curation

__all__ = ["CurationError", "format_prompt", "run_curation"]
