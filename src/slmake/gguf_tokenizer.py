"""The tokenizer of a GGUF base model, rebuilt for transformers, and checked against llama.cpp's.

transformers 5.5 reads GGUF tokenizers through converters that drift from llama.cpp: a
SentencePiece ("llama") GGUF comes back as a CodeLlamaTokenizer with five FIM tokens past the
embeddings, EOS set to BOS and `tokenizer.ggml.add_space_prefix` ignored; a byte-level BPE
("gpt2") GGUF on the llama architecture is read as SentencePiece (spaces -> <unk>). So the base
stage rebuilds the tokenizer from the GGUF's own metadata:

* SentencePiece: the GGUF's pieces, scores and types become a sentencepiece ModelProto (BPE over
  scores is what llama.cpp's SPM tokenizer runs, whatever the model was trained as), written as
  tokenizer.model. transformers converts that as it converts any SentencePiece model, and
  llama.cpp's converter reads the same file back at export, so scores and types survive the
  round trip.
* byte-level BPE: the GGUF's tokens and merges, with the pre-tokenizer llama.cpp runs for the
  name in `tokenizer.ggml.pre`.

Whatever the rebuild, `agreement` compares it token for token with llama.cpp's tokenizer of the
same file (BOS included) on the curated data, and the base stage refuses to go on when they differ.
"""

from __future__ import annotations

import functools
from pathlib import Path

from . import gguf_meta
from .runtimes.llamacpp import load_llama_cpp

# llama.cpp's byte-level BPE pre-tokenizer names -> how transformers' converters reproduce them.
# "digits": split every digit on its own before the GPT-2 regex (SmolLM, StarCoder).
# "digits": every digit on its own, then the GPT-2 regex (SmolLM, StarCoder); a regex: llama.cpp's
# own for that name (llama-vocab.cpp), then the byte-level mapping.
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
GGUF_BPE_PRE = {"default": "gpt2", "gpt-2": "gpt2", "gpt2": "gpt2", "smollm": "digits", "starcoder": "digits",
                "refact": "digits", "codeshell": "digits", "llama-bpe": _LLAMA3, "llama3": _LLAMA3,
                "qwen2": _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")}
LLAMA3_PRE = ("llama-bpe", "llama3")
CONTROL, USER_DEFINED, BYTE = 3, 4, 6   # llama.cpp token types (sentencepiece's piece type numbers)


class TokenizerError(Exception):
    """The GGUF's tokenizer cannot be rebuilt, or the rebuilt one disagrees with llama.cpp's."""


def fields(gguf_path: Path) -> dict:
    """Every metadata field of the GGUF, read once per file version (import, config fix-up and
    check all need it)."""
    st = Path(gguf_path).stat()
    return _fields(str(Path(gguf_path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _fields(path: str, size: int, mtime_ns: int) -> dict:
    return gguf_meta.read(path).fields


def metadata(gguf_path: Path) -> dict:
    """The GGUF's tokenizer.* fields (token lists included), without the prefix."""
    return {k.removeprefix("tokenizer."): v for k, v in fields(gguf_path).items() if k.startswith("tokenizer.")}


def kind(meta: dict) -> str:
    """'llama/default'-style name of a tokenizer for messages: tokenizer.ggml.model / .pre."""
    return f"{meta.get('ggml.model', '?')}/{meta.get('ggml.pre', '-')}"


def from_gguf(gguf_path: Path, out_dir: Path):
    """An HF tokenizer rebuilt from the GGUF's metadata (SentencePiece also writes tokenizer.model
    into out_dir), or None when transformers' own reading is used (other tokenizer models)."""
    meta = metadata(gguf_path)
    model = meta.get("ggml.model")
    if model == "llama":
        return _sentencepiece(meta, out_dir)
    if model == "gpt2":
        return _byte_level_bpe(gguf_path, meta)
    return None


def _names(meta: dict) -> dict:
    tokens = meta["ggml.tokens"]

    def name(key: str):
        i = meta.get(f"ggml.{key}_token_id")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    return {"bos_token": name("bos"), "eos_token": name("eos"), "unk_token": name("unknown"),
            "pad_token": name("padding")}


def _sentencepiece(meta: dict, out_dir: Path):
    """llama.cpp's SPM tokenizer as a tokenizers BPE: merge the adjacent pair whose merged piece
    scores highest, byte fallback for the rest, a space prefixed to each text fragment."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    tokens, scores = meta["ggml.tokens"], meta.get("ggml.scores") or [0.0] * len(meta["ggml.tokens"])
    types = meta.get("ggml.token_type") or [1] * len(tokens)
    add_prefix = bool(meta.get("ggml.add_space_prefix", True))   # llama.cpp's default for SPM
    _write_sentencepiece_model(meta, tokens, scores, types, add_prefix, out_dir / "tokenizer.model")
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []   # every split of every piece into two pieces, ranked by the merged piece's score
    for i in sorted(range(len(tokens)), key=lambda i: -scores[i]):
        piece = tokens[i]
        if types[i] in (1, USER_DEFINED):
            merges += [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
    names = _names(meta)
    backend = Tokenizer(models.BPE(vocab, merges, unk_token=names["unk_token"], fuse_unk=True,
                                   byte_fallback=BYTE in types))
    # llama.cpp prefixes a space to every text fragment at the start or after a special token, even
    # one that already starts with a space (transformers' Metaspace skips those): a normalizer runs
    # on each fragment between special tokens.
    steps = [normalizers.Prepend("\u2581")] if add_prefix else []
    backend.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "\u2581")])
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
                                        + ([decoders.Strip(" ", 1, 0)] if add_prefix else []))
    special = [t for t, k in zip(tokens, types) if k in (CONTROL, USER_DEFINED)]
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    return _wrap(backend, meta, names, add_bos_default=True)


def _write_sentencepiece_model(meta: dict, tokens, scores, types, add_prefix: bool, path: Path) -> None:
    """tokenizer.model for the export: llama.cpp's converter reads pieces, scores and types from it."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    for piece, score, typ in zip(tokens, scores, types):
        p = proto.pieces.add()
        p.piece, p.score, p.type = piece, float(score), int(typ)
    t, n = proto.trainer_spec, proto.normalizer_spec
    t.model_type, t.vocab_size, t.byte_fallback = pb.TrainerSpec.BPE, len(tokens), BYTE in types
    for key, field in (("unknown", "unk_id"), ("bos", "bos_id"), ("eos", "eos_id"), ("padding", "pad_id")):
        setattr(t, field, meta.get(f"ggml.{key}_token_id", -1))
    n.name, n.add_dummy_prefix, n.remove_extra_whitespaces, n.escape_whitespaces = "identity", add_prefix, False, True
    path.write_bytes(proto.SerializeToString())


def _wrap(backend, meta: dict, names: dict, add_bos_default: bool):
    """A transformers tokenizer over `backend` that adds BOS/EOS when the GGUF says llama.cpp does."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    bos = names["bos_token"] if meta.get("ggml.add_bos_token", add_bos_default) else None
    eos = names["eos_token"] if meta.get("ggml.add_eos_token", False) else None
    ids = {t: meta["ggml.tokens"].index(t) for t in (bos, eos) if t}
    single = " ".join([f"{bos}:0"] * bool(bos) + ["$A:0"] + [f"{eos}:0"] * bool(eos))
    pair = " ".join([single] + [f"{bos}:1"] * bool(bos) + ["$B:1"] + [f"{eos}:1"] * bool(eos))
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=list(ids.items()))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **names)
    tok.chat_template = meta.get("chat_template")
    if len(tok) != len(meta["ggml.tokens"]):
        raise TokenizerError(f"the tokenizer rebuilt from the GGUF has {len(tok)} tokens, the GGUF "
                             f"{len(meta['ggml.tokens'])}")
    return tok


def _byte_level_bpe(gguf_path: Path, meta: dict):
    """A tokenizers BPE over the GGUF's own tokens and merges, with the pre-tokenizer llama.cpp runs
    for `tokenizer.ggml.pre` (its regex, then byte-level mapping)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
    )

    pre = meta.get("ggml.pre", "default")
    if pre not in GGUF_BPE_PRE:
        raise TokenizerError(
            f"{gguf_path}: tokenizer.ggml.pre={pre!r} is a byte-level BPE pre-tokenizer slmake cannot rebuild "
            f"from a GGUF (supported: {sorted(GGUF_BPE_PRE)}); import the model's Hugging Face folder instead "
            "(model.hf.gguf_file: null)")
    tokens, types = meta["ggml.tokens"], meta.get("ggml.token_type") or [1] * len(meta["ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("ggml.merges", [])]
    llama3 = pre in LLAMA3_PRE   # llama.cpp: a word that is a token is taken whole; BOS by default
    backend = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, ignore_merges=llama3))
    regex = GGUF_BPE_PRE[pre]
    if regex == "digits":
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    elif regex == "gpt2":
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    special = [t for t, k in zip(tokens, types) if k in (CONTROL, USER_DEFINED)]
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    return _wrap(backend, meta, _names(meta), add_bos_default=llama3)


def agreement(tok, gguf_path: Path, texts: list[str]) -> dict:
    """Token-for-token comparison of `tok` with llama.cpp's tokenizer of the same GGUF, each side
    adding the special tokens its model asks for (BOS): counts and the first differing text."""
    try:
        ids = tok(texts)["input_ids"] if texts else []   # one batch: the Rust side
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception (e.g. no unk id for a piece)
        raise TokenizerError(f"{gguf_path}: the imported tokenizer ({kind(metadata(gguf_path))}) fails on the "
                             f"texts: {type(e).__name__}: {e}") from None
    ref = load_llama_cpp().Llama(str(gguf_path), vocab_only=True, verbose=False)
    differ, first = 0, None
    try:
        for text, ours in zip(texts, ids):
            theirs = ref.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            if ours != theirs:
                differ += 1
                if first is None:
                    first = {"text": text, "hf": ours, "llama_cpp": theirs}
    finally:
        ref.close()
    n = len(texts)
    return {"texts": n, "agree": n - differ, "agreement": round((n - differ) / n, 6) if n else None,
            "first_difference": first}


def require_agreement(tok, gguf_path: Path, texts: list[str], where: str) -> dict:
    """`agreement`, raising TokenizerError (naming the file, the tokenizer type, how many texts
    differ and the first difference) unless every text agrees."""
    meta = metadata(gguf_path)
    result = {"tokenizer": kind(meta), **agreement(tok, gguf_path, texts)}
    if result["agree"] == result["texts"]:
        return result
    d = result["first_difference"]
    i = next((k for k, (a, b) in enumerate(zip(d["hf"], d["llama_cpp"])) if a != b),
             min(len(d["hf"]), len(d["llama_cpp"])))
    lo = max(0, i - 3)
    raise TokenizerError(
        f"{gguf_path}: the imported tokenizer (tokenizer.ggml.model/pre = {result['tokenizer']}) disagrees with "
        f"llama.cpp's tokenizer of the same file on {result['texts'] - result['agree']} of {result['texts']} "
        f"texts from {where}; first: {d['text'][:120]!r} -> transformers {_show(tok, d['hf'], lo)} vs "
        f"llama.cpp {_show(tok, d['llama_cpp'], lo)} (from token {i}). Training on it would teach the "
        "model token ids llama.cpp never produces; import the model's Hugging Face folder instead "
        "(model.hf.gguf_file: null) or report the tokenizer type")


def _show(tok, ids: list[int], lo: int, n: int = 8) -> str:
    pieces = [tok.convert_ids_to_tokens(i) if 0 <= i < len(tok) else "?" for i in ids[lo: lo + n]]
    return f"{len(ids)} ids [{'...' if lo else ''}{', '.join(f'{i}:{p!r}' for i, p in zip(ids[lo: lo + n], pieces))}" \
           f"{'...' if lo + n < len(ids) else ''}]"
