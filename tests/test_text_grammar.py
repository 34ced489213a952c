"""Grammars for plain-text answers (runtimes/text_grammar.py), run through llama.cpp's own grammar
sampler on a character vocabulary: for every schema, llama.cpp accepts a string (and then lets
the model stop) exactly when jsonschema says the string satisfies the schema."""

from __future__ import annotations

import ctypes

import pytest
from jsonschema import Draft202012Validator

from slmake.runtimes.text_grammar import NoTextAnswer, TextGrammarUnsupported, literal, text_gbnf

CHARS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    """A vocab-only GGUF (SentencePiece-style): <unk> <s> </s>, the 256 byte tokens, one token per
    printable ASCII character. Strings are fed one character (or UTF-8 byte) per token."""
    gguf = pytest.importorskip("gguf")
    from slmake.runtimes.llamacpp import load_llama_cpp

    lc = load_llama_cpp()
    path = tmp_path_factory.mktemp("vocab") / "chars.gguf"
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [c for c in CHARS if c not in "\n\t"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + \
        [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (len(tokens) - 259)
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
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    llm = lc.Llama(str(path), vocab_only=True, verbose=False)
    ids = {t: i for i, t in enumerate(tokens)}
    yield lc, lc.llama_model_get_vocab(llm.model), ids
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
    wrong = [p for p in PROBES if accepts(vocab, gbnf, p) != valid.is_valid(p)]
    assert not wrong, f"grammar and schema disagree on {wrong}:\n{gbnf}"
    assert any(valid.is_valid(p) for p in PROBES) and not all(valid.is_valid(p) for p in PROBES)


def test_enum_grammar_is_bare_labels_not_json_strings():
    gbnf = text_gbnf({"type": "string", "enum": ["card_arrival", "top_up"]})
    assert gbnf == 'root ::= ("card_arrival" | "top_up")\n'     # no \" quotes, no trailing space rule


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
