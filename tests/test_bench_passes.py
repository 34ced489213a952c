"""bench runs accuracy for several artifacts at once only when their weights fit in free memory,
and a child's phase decides what it measures."""

from slmake import bench


def test_concurrent_accuracy_runs_fit_in_free_memory(monkeypatch):
    monkeypatch.setattr(bench, "available_memory", lambda: 24 * 10**9)
    assert bench._memory_workers([271e6, 145e6, 105e6, 117e6], 2) == 2
    assert bench._memory_workers([14e9, 8e9, 4e9], 3) == 1           # two f16 7B-class files would swap
    assert bench._memory_workers([10e9, 4e9, 3e9], 3) == 2
    monkeypatch.setattr(bench, "available_memory", lambda: None)
    assert bench._memory_workers([1e6, 1e6], 2) == 1                  # unknown memory: one at a time


def test_available_memory_reads_meminfo():
    free = bench.available_memory()
    assert free is None or free > 0


class _Gen:
    def __init__(self, tokens, decode_s, finish="stop"):
        self.tokens, self.ttft_s, self.decode_s, self.finish_reason = tokens, 0.01, decode_s, finish


class _Runner:
    """Answers are one token (a label), as in a classification task: [5] then end-of-generation,
    one decode step of 2 ms; with ignore_eos it generates max_new tokens at 1 ms each."""

    def __init__(self):
        self.calls, self.fixed, self.details = 0, [], {"runtime_note": "fake"}

    def generate(self, prompt_ids, max_new, ignore_eos=False):
        self.calls += 1
        if ignore_eos:
            self.fixed.append(max_new)
            return _Gen([5] * max_new, 0.001 * (max_new - 1), "length")
        return _Gen([5], 0.002)

    def close(self):
        pass


def test_phases_measure_what_they_say(tmp_path, monkeypatch):
    import json

    from tokenizers import Tokenizer, models

    (tmp_path / "tokenizer").mkdir()
    Tokenizer(models.WordLevel({"a": 5, "b": 6, "c": 7, "[UNK]": 0}, unk_token="[UNK]")).save(
        str(tmp_path / "tokenizer/tokenizer.json"))
    rows = [{"id": str(i), "prompt_ids": [1, 2], "tokens": [5] if i else [6], "expected": "a"}
            for i in range(4)]
    (tmp_path / "reference.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = _Runner()

    class _Module:
        @staticmethod
        def open_runner(art, compile_dir, bench_cfg):
            return runner

    monkeypatch.setattr(bench.targets, "load", lambda name: _Module)
    job = {"target": "cpu", "compile_dir": str(tmp_path), "reference_dir": str(tmp_path), "max_new_tokens": 4,
           "response_schema": {"type": "object"},
           "artifact": {"name": "a", "format": "gguf", "precision": "f16", "path": "a", "runtime": "llama.cpp",
                        "status": "built", "reason": "", "notes": {}},
           "bench": {"limit": None, "speed_prompts": 2, "repeats": 3, "warmup": 1, "threads": 2,
                     "decode_tokens": 9}}
    acc = bench._worker({**job, "phase": "accuracy"})
    assert runner.calls == 4 and acc["parity"] == 0.75 and len(acc["outputs"]) == 4 and "decode_tok_s" not in acc
    assert acc["exact_match"] == 1.0 and "request_ms_p50" not in acc
    runner.calls = 0
    speed = bench._worker({**job, "phase": "speed"})
    # warm-up + 2 prompts x 3 repeats at the task's own (one-token) answers, then one fixed-length
    # decode per speed prompt: the one-token answers have no decode interval, the fixed run does
    assert runner.calls == 1 + 2 * 3 + 2 and runner.fixed == [9, 9] and "parity" not in speed
    assert speed["decode_tok_s"] == 1000.0 and speed["ttft_ms"] == 10.0
    assert speed["request_ms_p50"] == speed["request_ms_p95"] == 12.0     # TTFT + the end token's step
    assert speed["decode_method"] == ("9 generated tokens per prompt (of 9 asked), end-of-generation "
                                      "suppressed, median of 2 prompts")
    assert "2 prompts x 3 repeats" in speed["request_method"]
    assert speed["runtime_note"] == "fake" and speed["threads"] == 2
    runner.calls = 0
    both = bench._worker(job)
    assert runner.calls == 4 + 9 and {"parity", "decode_tok_s", "request_ms_p95", "outputs"} <= set(both)
    metrics, details, _ = bench.split_results({"a": both})
    assert {"decode_tok_s", "ttft_ms", "request_ms_p50", "request_ms_p95"} <= set(metrics["a"])
    assert "decode_method" in details["a"] and "decode_tok_s" not in details["a"]


def test_decode_speed_takes_what_the_context_allowed_and_p95_is_a_measured_value():
    class _Short(_Runner):
        def generate(self, prompt_ids, max_new, ignore_eos=False):
            n = min(max_new, 3 + len(prompt_ids))   # a context that ends a run early
            return _Gen([5] * n, 0.001 * (n - 1), "length")

    d = bench.decode_speed(_Short(), [[1], [1, 2, 3]], 64)
    assert d["decode_tok_s"] == 1000.0
    assert d["decode_method"].startswith("4-6 generated tokens per prompt (of 64")
    assert bench._nearest_rank([0.3, 0.1, 0.2], 0.95) == 0.3
    assert bench._nearest_rank([0.3, 0.1, 0.2], 0.5) == 0.2
    assert bench._nearest_rank([float(i) for i in range(1, 21)], 0.95) == 19.0
