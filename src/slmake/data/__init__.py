"""Data preparation: turn a raw instruction/response file into clean, deterministic splits."""

from slmake.data.curate import CurationError, format_prompt, run_curation

__all__ = ["CurationError", "format_prompt", "run_curation"]
