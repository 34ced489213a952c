"""Grammars for plain-text answers (runtimes/text_grammar.py), run through llama.cpp's own grammar
sampler on a character vocabulary: for every schema, llama.cpp accepts a string (and then lets
the model stop) exactly when jsonschema says the string satisfies the schema."""

from __future__ import annotations

import ctypes

import pytest
from jsonschema import Draft202012Validator

from slmake.runtimes.text_grammar import NoTextAnswer, TextGrammarUnsupported, literal, text_gbnf

CHARS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]


def vocab_gguf(path, tokens: list[str], scores: list[float], types: list, add_space_prefix: bool = False):
    """A vocab-only llama GGUF (SentencePiece-style tokenizer model) with these tokens; returns the
    loaded (llama_cpp, its vocab, the Llama that owns it)."""
    gguf = pytest.importorskip("gguf")
    from slmake.runtimes.llamacpp import load_llama_cpp

    lc = load_llama_cpp()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(tokens.index("<s>"))
    w.add_eos_token_id(tokens.index("</s>"))
    w.add_unk_token_id(tokens.index("<unk>"))
    w.add_add_space_prefix(add_space_prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    llm = lc.Llama(str(path), vocab_only=True, verbose=False)
    return lc, lc.llama_model_get_vocab(llm.model), llm


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    """A vocab-only GGUF (SentencePiece-style): <unk> <s> </s>, the 256 byte tokens, one token per
    printable ASCII character. Strings are fed one character (or UTF-8 byte) per token."""
    gguf = pytest.importorskip("gguf")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [c for c in CHARS if c not in "\n\t"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + \
        [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (len(tokens) - 259)
    lc, v, llm = vocab_gguf(tmp_path_factory.mktemp("vocab") / "chars.gguf", tokens, [0.0] * len(tokens), types)
    yield lc, v, {t: i for i, t in enumerate(tokens)}
    llm.close()


def _allowed(lc, sampler, token: int) -> bool:
    one = (lc.llama_token_data * 1)(lc.llama_token_data(token, 0.0, 0.0))
    arr = lc.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
    lc.llama_sampler_apply(sampler, ctypes.byref(arr))
    return one[0].logit != float("-inf")


def accepts(vocab, gbnf: str, text: str) -> bool:
    """Whether llama.cpp's grammar sampler lets ``text`` be generated and then ended (EOS)."""
    lc, v, ids = vocab
    sampler = lc.llama_sampler_init_grammar(v, gbnf.encode(), b"root")
    assert sampler, f"llama.cpp did not compile:\n{gbnf}"
    try:
        for ch in text:
            pieces = [ids[ch]] if ch in ids else [ids[f"<0x{b:02X}>"] for b in ch.encode()]
            for tok in pieces:
                if not _allowed(lc, sampler, tok):
                    return False
                lc.llama_sampler_accept(sampler, tok)
        return _allowed(lc, sampler, ids["</s>"])
    finally:
        lc.llama_sampler_free(sampler)


PROBES = ["", "a", "ab", "abc", "abcd", "abcde", "network", "networks", "net", "Network", "email", " email",
          "email\n", 'say "hi"', "a\\b", "x\ny", "café", "cafe", "3", "yes", "AB-123", "AB-12", "ab-123",
          "AB-1234", "x12y", "12", "x1y", "zzz", "z", "q"]

SCHEMAS = [
    {"type": "string", "enum": ["network", "email", 'say "hi"', "a\\b", "x\ny", "café", 3]},
    {"const": "yes"},
    {"type": "string", "minLength": 2, "maxLength": 4},
    {"type": "string", "minLength": 5},
    {"type": "string", "maxLength": 0},
    {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
    {"type": "string", "pattern": "\\d{2}"},           # unanchored: a search, as in JSON Schema
    {"type": "string", "pattern": "^z+"},
    {"anyOf": [{"enum": ["a", "q"]}, {"pattern": "^z+$"}, {"type": "integer"}]},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(i) for i in range(len(SCHEMAS))])
def test_grammar_accepts_exactly_what_the_schema_allows(vocab, schema):
    gbnf = text_gbnf(schema)
    valid = Draft202012Validator(schema)
    # one leading space is the word-start mark of a label's first token: " email" is "email" stripped,
    # as evaluate and serve score it; nothing else the schema rejects gets through
    wrong = [p for p in PROBES + [" " + p for p in PROBES] + ["  email", "email "]
             if accepts(vocab, gbnf, p) != (valid.is_valid(p) or (p[:1] == " " and valid.is_valid(p[1:])))]
    assert not wrong, f"grammar and schema disagree on {wrong}:\n{gbnf}"
    assert any(valid.is_valid(p) for p in PROBES) and not all(valid.is_valid(p) for p in PROBES)


def test_enum_grammar_is_bare_labels_not_json_strings():
    gbnf = text_gbnf({"type": "string", "enum": ["card_arrival", "top_up"]})
    assert gbnf == 'root ::= " "? ("card_arrival" | "top_up")\n'     # no \" quotes, no trailing space rule


def test_literal_escapes_for_gbnf():
    assert literal('a"b\\c\nd\te\x01') == '"a\\"b\\\\c\\nd\\te\\x01"'


def test_schemas_that_cannot_constrain_text_say_why():
    with pytest.raises(TextGrammarUnsupported, match="nothing in the response schema"):
        text_gbnf({"type": "string"})
    with pytest.raises(NoTextAnswer, match="never satisfy"):
        text_gbnf({"type": "object", "properties": {"x": {}}})
    with pytest.raises(NoTextAnswer, match="no string value"):
        text_gbnf({"enum": [1, 2]})
    with pytest.raises(TextGrammarUnsupported, match="cannot express"):
        text_gbnf({"type": "string", "pattern": "^(?=a)a$"})


# A label the model writes as ONE SentencePiece token with the word-boundary mark ("▁network") is
# the same answer as the label spelled without it: the decoder drops the mark at the start, and text
# answers are compared and validated stripped (metrics.score, serve). The grammar must allow it.
LABELS = ["network", "hardware", "email"]
SPM_EOS = 3


@pytest.fixture(scope="module")
def spm(tmp_path_factory):
    """A SentencePiece BPE tokenizer trained here (base_model.train_tokenizer: llama-style ids, byte
    fallback) whose vocabulary holds "▁network", "▁hardware", "▁email" as single pieces: its Hugging
    Face tokenizer (what llguidance masks with) and a vocab-only GGUF of the same pieces (llama.cpp)."""
    gguf = pytest.importorskip("gguf")
    pytest.importorskip("llguidance")
    import json

    import sentencepiece

    from slmake.base_model import load_tokenizer, train_tokenizer

    out = tmp_path_factory.mktemp("spm")
    texts = [f"ticket {i} about the {label} issue answer {label}" for i in range(50) for label in LABELS]
    model = train_tokenizer(texts, 360, out)
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}))
    tok = load_tokenizer(out)
    tok.save_pretrained(str(out))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    types = [gguf.TokenType.UNKNOWN if sp.is_unknown(i) else gguf.TokenType.CONTROL if sp.is_control(i)
             else gguf.TokenType.BYTE if sp.is_byte(i) else gguf.TokenType.NORMAL for i in range(len(pieces))]
    lc, v, llm = vocab_gguf(out / "vocab.gguf", pieces, [sp.get_score(i) for i in range(len(pieces))], types,
                            add_space_prefix=True)
    yield tok, (out / "tokenizer.json").read_text(encoding="utf-8"), (lc, v)
    llm.close()


def llama_accepts(lc, v, gbnf: str, tokens: list[int], eos: int) -> bool:
    """llama.cpp's grammar sampler: every token allowed in turn, then the end of generation."""
    sampler = lc.llama_sampler_init_grammar(v, gbnf.encode(), b"root")
    assert sampler, f"llama.cpp did not compile:\n{gbnf}"
    try:
        for t in tokens:
            if not _allowed(lc, sampler, t):
                return False
            lc.llama_sampler_accept(sampler, t)
        return _allowed(lc, sampler, eos)
    finally:
        lc.llama_sampler_free(sampler)


def test_a_label_written_as_one_sentencepiece_token_is_accepted_by_both_grammar_paths(spm):
    from slmake.runtimes.guide import Guide

    tok, tokenizer_json, (lc, v) = spm
    ids = tok.convert_tokens_to_ids
    one = {label: ids("▁" + label) for label in LABELS}
    assert tok.unk_token_id not in one.values() and tok.decode([one["network"]]) == "network"
    gbnf = text_gbnf({"type": "string", "enum": LABELS})
    guide = Guide(gbnf, tokenizer_json)
    n = len(tok)
    spelled = [ids(c) for c in "network"]            # the same text in pieces without the mark
    cases = {
        "▁network": ([one["network"]], True),
        "n e t w o r k": (spelled, True),
        "▁ network": ([ids("▁"), *spelled], True),
        "▁email": ([one["email"]], True),
        "▁email▁email": ([one["email"], one["email"]], False),
        "▁ ▁email": ([ids("▁"), one["email"]], False),  # two spaces: not one word-start mark
        "▁hard": (tok("hard", add_special_tokens=False)["input_ids"], False),
        "▁ticket": ([ids("▁ticket")], False),
    }
    for name, (seq, want) in cases.items():
        assert tok.unk_token_id not in seq, name
        text = tok.decode(seq)
        assert text.strip() in LABELS or not want, (name, text)   # as evaluate and serve score it
        assert guide.accepts(seq, True, {SPM_EOS}, n) == want, f"llguidance: {name}\n{gbnf}"
        assert llama_accepts(lc, v, gbnf, seq, SPM_EOS) == want, f"llama.cpp: {name}\n{gbnf}"
    # the mask keeps a model's one-token answer as it is (the free argmax is allowed)
    import numpy as np

    m = guide.matcher({SPM_EOS}, n)
    logits = np.zeros(n, dtype=np.float32)
    logits[one["hardware"]] = 5.0
    assert m.pick(logits) == one["hardware"]
