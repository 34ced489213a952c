"""data.source as one source or a list (origins in the ledger; dedup, PII and leakage across
sources), and the JSON array / JSON object (records_key) / saved Hugging Face dataset formats."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from curate_utils import QA, all_rows, check_invariant, curate_cfg, ledger, quarantine, write_jsonl
from curate_utils import base as base_str
from slmake.data import jsonfile, sources
from slmake.data.curate import CurationError


def base(source, **over) -> dict:
    """test_curate_ingest's config, with `source` as given (a path, a list or a mapping)."""
    cfg = base_str("x", **over)
    cfg["source"] = source if isinstance(source, (list, dict)) else str(source)
    return cfg


def qa(i: int, topic: str = "plums") -> dict:
    return {"q": f"question {i} about {topic} and nothing else", "a": f"answer {i}"}


# ---------------------------------------------------------------------------- several sources

def test_two_sources_ledger_names_both_origins(tmp_path):
    """A feedback file as a second source: curated with the first, its records named by its origin."""
    main = write_jsonl(tmp_path / "main.jsonl", [qa(i) for i in range(20)])
    fb = write_jsonl(tmp_path / "feedback.jsonl", [
        qa(3),                                                     # the same as main's record 3: a duplicate
        {"q": "question 50 about plums, mail ann@example.com", "a": "answer 50"},  # PII, scrubbed
        *[qa(i, "pears") for i in range(60, 70)]])
    cfg = base([str(main), {"path": str(fb), "origin": "feedback"}], columns=QA)
    report = curate_cfg(tmp_path, cfg)
    assert report["input"] == 32 and report["dropped"]["duplicate"] == 1 and report["pii"]["counts"]["email"] == 1
    assert [(s["path"], s["records"]) for s in report["sources"]] == [(str(main), 20), ("feedback", 12)]
    rows = ledger(tmp_path)
    assert Counter(r["source"] for r in rows) == {str(main): 20, "feedback": 12}
    assert [int(r["line"]) for r in rows if r["source"] == "feedback"] == list(range(1, 13))
    dup = [r for r in rows if r["reason"] == "duplicate"]
    assert [(r["source"], r["line"]) for r in dup] == [("feedback", "1")]  # the first (main's) is kept
    assert any("<EMAIL>" in r["prompt"] for r in all_rows(tmp_path))
    assert report["leakage"]["ok"] and report["source"] == cfg["source"]
    card = (tmp_path / "reports" / "card.md").read_text()
    assert "| `feedback` | jsonl | 12 |" in card
    check_invariant(tmp_path, report)


def test_one_source_as_string_list_or_mapping_means_the_same(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [qa(i) for i in range(30)])
    outs = {}
    for name, source in (("str", str(src)), ("list", [str(src)]), ("map", {"path": str(src)})):
        curate_cfg(tmp_path / name, base(source, columns=QA))
        outs[name] = [(tmp_path / name / "out" / f"{s}.jsonl").read_bytes() for s in ("train", "val", "test")]
        outs[name].append((tmp_path / name / "reports" / "ledger.csv").read_bytes())
    assert outs["str"] == outs["list"] == outs["map"]


def test_per_source_format_and_folder_origin(tmp_path):
    (tmp_path / "fb").mkdir()
    write_jsonl(tmp_path / "fb" / "a.jsonl", [qa(i, "figs") for i in range(3)])
    txt = tmp_path / "more.txt"  # an extension auto cannot read: the entry names its format
    txt.write_text("q,a\n" + "".join(f"question {i} about kiwis and nothing else,answer {i}\n" for i in range(4)))
    report = curate_cfg(tmp_path, base([{"path": str(tmp_path / "fb"), "origin": "fb"},
                                        {"path": str(txt), "format": "csv", "origin": "more"}], columns=QA))
    assert [(s["path"], s["format"], s["records"]) for s in report["sources"]] == [
        ("fb/a.jsonl", "jsonl", 3), ("more", "csv", 4)]


@pytest.mark.parametrize("source,match", [
    (lambda p: [str(p), str(p)], "is listed twice"),
    (lambda p: [{"path": str(p), "origin": "x"}, {"path": str(p.with_name("e.jsonl")), "origin": "x"}],
     "two sources are named 'x'"),
    (lambda p: [{"path": str(p), "records_key": "data"}], r"data.source.0.records_key: only for JSON files"),
    (lambda p: [{"path": str(p), "split": "train"}], r"data.source.0.split: only for a saved Hugging Face dataset"),
    (lambda p: [{"path": str(p), "format": "hf_disk"}], "is not a dataset folder written by datasets' save_to_disk"),
    (lambda p: [str(p), {"pth": "x"}], r"data.source.1: unknown key\(s\) \['pth'\]"),
    (lambda p: [str(p), {"path": str(p), "format": "xml"}], r"data.source.1.format: 'xml' is not one of"),
    (lambda p: [], r"data.source: \[\] violates minItems"),
    (lambda p: [str(p), str(p.with_name("missing.jsonl"))], "data.source.1: .*missing.jsonl not found"),
])
def test_source_list_errors(tmp_path, source, match):
    src = write_jsonl(tmp_path / "d.jsonl", [qa(i) for i in range(5)])
    write_jsonl(tmp_path / "e.jsonl", [qa(i, "figs") for i in range(5)])
    with pytest.raises(CurationError, match=match):
        curate_cfg(tmp_path, base(source(src), columns=QA))
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_fingerprint_follows_content_of_every_source(tmp_path):
    """What the check stage writes to build/check.data.json (the curate stage's DVC dependency)."""
    a = write_jsonl(tmp_path / "a.jsonl", [qa(1)])
    b = write_jsonl(tmp_path / "b.jsonl", [qa(2)])
    one = sources.fingerprint(str(a), "auto")
    two = sources.fingerprint([str(a), {"path": str(b), "origin": "fb"}], "auto")
    assert [s["path"] for s in two["sources"]] == [str(a), "fb"] and two["sources"][0] == one["sources"][0]
    write_jsonl(b, [qa(3)])
    assert sources.fingerprint([str(a), {"path": str(b), "origin": "fb"}], "auto") != two
    assert sources.fingerprint(str(a), "auto") == one


# ---------------------------------------------------------------------------- JSON files

def alpaca(i: int) -> dict:
    return {"instruction": f"Rewrite sentence number {i} politely", "input": "" if i % 2 else f"context {i}",
            "output": f"Polite sentence {i}."}


ALPACA = {"shape": "alpaca", "columns": {"instruction": "instruction", "input": "input", "output": "output"}}


def test_json_array_alpaca_layout(tmp_path):
    """The Alpaca / LLaMA-Factory .json layout: pretty-printed, one array; bad records quarantined by index."""
    records = [alpaca(i) for i in range(12)]
    text = json.dumps(records, indent=2).replace('"Polite sentence 4."', "tru").replace(
        '"output": "Polite sentence 7."', '"output": 7')  # record 5: bad JSON; record 8: wrong type
    src = tmp_path / "alpaca_data.json"
    src.write_text(text)
    report = curate_cfg(tmp_path, base(src, **ALPACA))
    assert report["input"] == 12 and report["sources"][0]["format"] == "json"
    assert report["quarantined"]["invalid_json"] == 1 and report["quarantined"]["wrong_type"] == 1
    by_line = {q["line"]: q for q in quarantine(tmp_path)}
    assert set(by_line) == {5, 8} and by_line[5]["reason"] == "invalid_json"
    assert by_line[5]["detail"].startswith("record 5 (line 2") and by_line[5]["source"] == str(src)
    assert [int(r["line"]) for r in ledger(tmp_path)] == list(range(1, 13))
    rows = {r["prompt"]: r["response"] for r in all_rows(tmp_path)}
    assert rows["Q: Rewrite sentence number 2 politely\n\ncontext 2\nA: "] == "Polite sentence 2."
    check_invariant(tmp_path, report)


def test_json_array_is_streamed_across_chunk_boundaries(tmp_path, monkeypatch):
    """Strings with brackets, quotes and escapes, scanned in 7-character chunks, give the same records."""
    tricky = [{"instruction": f'say "]}}{{[" and \\ then \u00e9 {i}', "input": "", "output": f"ok {i} ]"}
              for i in range(15)]
    huge = {"instruction": "a long one " + '\\"]' * 2000, "input": "", "output": "x"}  # past max_line_bytes
    src = tmp_path / "t.json"
    src.write_text(json.dumps(tricky[:7] + [huge] + tricky[7:], ensure_ascii=False))
    cfg = base(src, **ALPACA, quarantine={"max_share": 0.5, "max_line_bytes": 1024})
    curate_cfg(tmp_path / "big", cfg)
    monkeypatch.setattr(jsonfile, "CHUNK", 7)
    curate_cfg(tmp_path / "small", cfg)
    for rel in ("out/train.jsonl", "out/val.jsonl", "out/test.jsonl", "reports/ledger.csv", "reports/quarantine.jsonl"):
        assert (tmp_path / "big" / rel).read_bytes() == (tmp_path / "small" / rel).read_bytes()
    assert sorted(r["response"] for r in all_rows(tmp_path / "small")) == sorted(r["output"] for r in tricky)
    assert [(q["line"], q["reason"]) for q in quarantine(tmp_path / "small")] == [(8, "line_too_long")]


def test_json_object_with_records_key(tmp_path):
    """Records under data.items, after siblings that are skipped (one bigger than max_line_bytes)."""
    doc = {"meta": {"note": "a } tricky [ \" sibling", "items": ["not", "these"]},
           "blob": "x" * 5000,
           "data": {"version": 2, "items": [qa(i) for i in range(9)], "after": [1, 2]}}
    src = tmp_path / "export.json"
    src.write_text(json.dumps(doc, indent=1))
    cfg = base([{"path": str(src), "records_key": "data.items"}], columns=QA,
               quarantine={"max_share": 0.5, "max_line_bytes": 1024})
    report = curate_cfg(tmp_path, cfg)
    assert report["input"] == 9 and report["kept"] == 9
    with pytest.raises(CurationError, match=r"records_key data.records: no key 'records' in data \(its keys: \['version', 'items', 'after'\]\)"):
        curate_cfg(tmp_path, base([{"path": str(src), "records_key": "data.records"}], columns=QA))
    with pytest.raises(CurationError, match=r"records_key data.version is a number or literal, expected an array"):
        curate_cfg(tmp_path, base([{"path": str(src), "records_key": "data.version"}], columns=QA))
    with pytest.raises(CurationError, match="a JSON object, not an array of records: set records_key"):
        curate_cfg(tmp_path, base(src, columns=QA))


@pytest.mark.parametrize("text,match", [
    ('[{"q": "a", "a": "b"}, {"q": "unterminated, "a": "b"}]', r"line 1, column \d+: the file ends inside this value"),
    ('[{"q": "a", "a": "b"} {"q": "c", "a": "d"}]', r"expected ',' or '\]' after record 1"),
    ('[{"q": "a", "a": "b"},\n{"q": "c", "a": "d"}', r"line 2, column 21: expected ',' or '\]' after record 2 \(line 2\), found 'the end of the file'"),
    ('[{"q": "a", "a": "b"},\n', r"line 1, column 1: the array of records opened here is not closed"),
    ('[{"q": "a", "a": ["b"}]', r"'}' does not close the bracket it meets"),
    ('[{"q": "a", "a": "b"}]\n[{"q": "c", "a": "d"}]', r"line 2, column 1: more text after the array"),
    ("", "empty file"),
    ('"just a string"', "expected a JSON array of records, found a string"),
])
def test_json_structure_errors_fail_naming_line_and_column(tmp_path, text, match):
    src = tmp_path / "d.json"
    src.write_text(text)
    with pytest.raises(CurationError, match=match):
        curate_cfg(tmp_path, base(src, columns=QA))
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_json_files_in_folders_need_format_json(tmp_path):
    """A folder read with format auto skips .json (metadata such as categories.json); format json reads them."""
    (tmp_path / "d").mkdir()
    write_jsonl(tmp_path / "d" / "a.jsonl", [qa(i) for i in range(3)])
    (tmp_path / "d" / "categories.json").write_text('["a", "b"]')
    (tmp_path / "d" / "more.json").write_text(json.dumps([qa(i, "figs") for i in range(4)]))
    auto = curate_cfg(tmp_path / "auto", base(tmp_path / "d", columns=QA))
    assert [s["path"].rsplit("/", 1)[1] for s in auto["sources"]] == ["a.jsonl"]
    js = curate_cfg(tmp_path / "json", base(tmp_path / "d", format="json", columns=QA))
    assert [s["path"].rsplit("/", 1)[1] for s in js["sources"]] == ["categories.json", "more.json"]
    assert js["input"] == 6 and js["quarantined"]["wrong_type"] == 2


def test_json_array_read_as_jsonl_says_so(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps([qa(i) for i in range(3)], indent=2))
    with pytest.raises(CurationError, match="looks like a JSON array file: set its format to json"):
        curate_cfg(tmp_path, base(src, columns=QA))


# ---------------------------------------------------------------------------- saved Hugging Face datasets

def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [qa(i) | {"extra": i} for i in range(10)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    report = curate_cfg(tmp_path / "auto", base(tmp_path / "ds", columns=QA))  # found by its files
    assert report["sources"][0]["format"] == "hf_disk" and report["input"] == 10 and report["kept"] == 10
    assert [int(r["line"]) for r in ledger(tmp_path / "auto")] == list(range(1, 11))
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:6]),
                               "test": datasets.Dataset.from_list(rows[6:] + [{"q": None, "a": "x", "extra": 0}])})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(CurationError, match=r"a DatasetDict with splits \['train', 'test'\]: name one as `split`"):
        curate_cfg(tmp_path / "x", base([{"path": str(tmp_path / "dd"), "format": "hf_disk"}], columns=QA))
    report = curate_cfg(tmp_path / "split", base([{"path": str(tmp_path / "dd"), "split": "test", "origin": "hf"}],
                                                 columns=QA))
    assert report["input"] == 5 and report["quarantined"]["wrong_type"] == 1
    (q,) = quarantine(tmp_path / "split")
    assert (q["source"], q["line"]) == ("hf", 5)
    with pytest.raises(CurationError, match=r"the dataset has columns \['q', 'a', 'extra'\], but the data config maps \['question'\]"):
        curate_cfg(tmp_path / "y", base(tmp_path / "ds", columns={"instruction": "question", "response": "a"}))
    check_invariant(tmp_path / "split", report)


def test_a_correction_listed_first_wins_with_keep_first(tmp_path):
    """docs/guide/curation.md's recipe for corrections of inputs already in the data."""
    main = write_jsonl(tmp_path / "main.jsonl", [qa(i) for i in range(20)])
    fb = write_jsonl(tmp_path / "fb.jsonl", [{"q": qa(4)["q"], "a": "the corrected answer"}])
    srcs = [{"path": str(fb), "origin": "feedback"}, str(main)]
    report = curate_cfg(tmp_path, base(srcs, columns=QA, dedup={"conflicts": "keep_first"}))
    assert report["dedup"]["conflict_groups"] == 1 and report["kept"] == 20
    assert {r["response"] for r in all_rows(tmp_path) if r["prompt"] == f"Q: {qa(4)['q']}\nA: "} == {
        "the corrected answer"}
    majority = curate_cfg(tmp_path / "m", base(srcs, columns=QA))  # a one-against-one tie drops both
    assert majority["dropped"]["conflicting_duplicate"] == 2


def test_a_missing_relative_source_in_a_temporary_experiment_copy_says_to_use_an_absolute_path(tmp_path, monkeypatch):
    """`dvc exp run --temp` (and `slmake search`) run stages in .dvc/tmp/exps/...: a `../` source
    that exists beside the project is missing there, and the error says why."""
    copy = tmp_path / "project/.dvc/tmp/exps/standalone/tmpabc"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    with pytest.raises(CurationError, match=r"temporary copy of the project .* must be absolute"):
        sources.find_sources("../shared/datasets/banking77/train.csv", "auto")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CurationError) as e:
        sources.find_sources("../missing.csv", "auto")
    assert "temporary copy" not in str(e.value) and f"resolve against {tmp_path}" in str(e.value)
