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
    def __init__(self, tokens):
        self.tokens, self.ttft_s, self.decode_s, self.finish_reason = tokens, 0.01, 0.02, "stop"


class _Runner:
    def __init__(self):
        self.calls, self.details = 0, {"runtime_note": "fake"}

    def generate(self, prompt_ids, max_new):
        self.calls += 1
        return _Gen([5, 6, 7])

    def close(self):
        pass


def test_phases_measure_what_they_say(tmp_path, monkeypatch):
    import json

    from tokenizers import Tokenizer, models

    (tmp_path / "tokenizer").mkdir()
    Tokenizer(models.WordLevel({"a": 5, "b": 6, "c": 7, "[UNK]": 0}, unk_token="[UNK]")).save(
        str(tmp_path / "tokenizer/tokenizer.json"))
    rows = [{"id": str(i), "prompt_ids": [1, 2], "tokens": [5, 6, 7] if i else [5], "expected": "x"} for i in range(4)]
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
           "bench": {"limit": None, "speed_prompts": 2, "repeats": 3, "warmup": 1, "threads": 2}}
    acc = bench._worker({**job, "phase": "accuracy"})
    assert runner.calls == 4 and acc["parity"] == 0.75 and len(acc["outputs"]) == 4 and "decode_tok_s" not in acc
    runner.calls = 0
    speed = bench._worker({**job, "phase": "speed"})
    assert runner.calls == 1 + 2 * 3 and speed["decode_tok_s"] == 100.0 and "parity" not in speed
    assert speed["runtime_note"] == "fake" and speed["threads"] == 2
    runner.calls = 0
    both = bench._worker(job)
    assert runner.calls == 4 + 7 and {"parity", "decode_tok_s", "outputs"} <= set(both)
