"""Length in tokens: the spec's own tokenizer when a folder is configured, else an estimate.

The base model's tokenizer does not exist yet when curation runs for scratch models (it is
trained on the curated splits), so the default is an estimate: max(words * 4/3, chars / 4),
which is close to or above what BPE/unigram tokenizers of ~1-32k vocabularies produce on English.
"""

from __future__ import annotations

from pathlib import Path

from .errors import CurationError


class TokenCounter:
    def __init__(self, tokenizer_dir: str | None):
        self.method = "estimate (max of words*4/3, chars/4)"
        self._encode = None
        if tokenizer_dir is not None:
            self._encode = _load(Path(tokenizer_dir))
            self.method = f"tokenizer {tokenizer_dir}"

    def count(self, text: str) -> int:
        if self._encode is not None:
            return self._encode(text)
        return max(-(-len(text.split()) * 4 // 3), -(-len(text) // 4))


def _load(folder: Path):
    """A counting function for the tokenizer in `folder`: its tokenizer.json through the
    `tokenizers` library when there is one (fast, no model framework import), else
    transformers' AutoTokenizer (local files only, no remote code).  Special tokens not counted."""
    try:
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            return lambda text: len(tok.encode(text, add_special_tokens=False).ids)
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        return lambda text: len(hf(text, add_special_tokens=False)["input_ids"])
    except Exception as e:  # noqa: BLE001 - any loader failure is a config problem for the user
        raise CurationError(f"data.filters.tokenizer: cannot load a tokenizer from {folder} "
                            f"({type(e).__name__}: {e})") from None
