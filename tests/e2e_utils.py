"""Helpers for end-to-end tests: a throw-away slmake project (a git repo with conf/, stages/, dvc.yaml)
and a tiny random Llama with a locally trained SentencePiece tokenizer for the target tests."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def sh(cmd, cwd, check=True):
    res = subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"`{cmd}` failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def ran_stages(output: str) -> set[str]:
    """Stages `dvc repro` ran, except `check`: it validates the spec on every repro (always_changed)
    and its output never changes, so it never reruns anything downstream."""
    return {line.split("'")[1] for line in output.splitlines()
            if line.startswith("Running stage '") and line.split("'")[1] != "check"}


def merge(into: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v


def make_project(repo: Path, spec: dict, defaults: dict | None = None) -> Path:
    """Copy the project into ``repo``, fold ``spec`` into conf/config.yaml (its keys override the
    groups: _self_ comes last), pick group options from ``defaults``, compose params.yaml, commit."""
    for item in ("conf", "stages", "src", "dvc.yaml", ".gitignore", ".dvcignore", ".dvc/config", "logs/.gitkeep"):
        src, dst = ROOT / item, repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    config = yaml.safe_load((repo / "conf/config.yaml").read_text())
    for group, option in (defaults or {}).items():
        config["defaults"] = [{group: option} if isinstance(d, dict) and group in d else d for d in config["defaults"]]
    merge(config, spec)
    (repo / "conf/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    sh("slmake check --write params.yaml", repo)
    sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", repo)
    return repo


WORDS = "the a cat dog sat on mat ran red blue house tree bank money card transfer my account near".split()
TEXTS = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(10)) for i in range(400)]
# What the target tests run a tiny model's artifacts on (conftest.py's `tiny_reference`).
PROMPTS = ["the cat sat on the", "blue house near a tree", "money transfer to my account", "x", "dog ran",
           "red card bank near my house on the mat"]
BENCH = {"threads": None, "warmup": 0, "repeats": 1, "speed_prompts": 2, "limit": None}
NEW = 16  # greedy tokens per prompt


def tiny_llama(root: Path, vocab: int = 320) -> Path:
    """A 2-layer Llama (hidden 256, 4 heads) in ``root/merged`` with a SentencePiece tokenizer of
    ``vocab`` tokens trained on TEXTS, as base_model.build_scratch makes them."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from slmake.base_model import load_tokenizer, train_tokenizer

    model_dir = root / "merged"
    model_dir.mkdir(parents=True)
    train_tokenizer(TEXTS, vocab, model_dir)
    (model_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}))
    tok = load_tokenizer(model_dir)
    assert len(tok) == vocab
    tok.save_pretrained(str(model_dir))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         bos_token_id=2, eos_token_id=3, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(model_dir))
    return model_dir


def build_ctx(merged: Path, out: Path, data: Path | None = None):
    """A target's BuildContext as the compile driver makes it, with logs in ``out/logs``."""
    from slmake.targets.base import BuildContext

    out.mkdir(parents=True, exist_ok=True)
    return BuildContext(Path(merged), Path(out), Path(data) if data else Path(out) / "no-data", Path(out) / "logs")


# Merged into conf/config.yaml (its keys override the groups since _self_ comes last): small enough
# for ~2 minutes on 2 cores. Built once per test session by conftest.py's `micro_repo`.
MICRO = {
    "model": {"scratch": {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_layers": 2,
                          "num_heads": 2, "num_kv_heads": 2,
                          "pretrain": {"steps": 300, "batch_size": 8, "block_size": 64, "lr": 0.003, "threads": None}}},
    "data": {"source": "data/micro.jsonl"},
    "train": {"max_steps": 150, "batch_size": 8, "lr": 0.005, "threads": None, "lora": {"r": 8, "alpha": 16}},
    "eval": {"limit": 24},
    "targets": {"cpu": {"gguf": {"quants": ["f16", "q8_0", "q4_k_m"]}, "onnx_genai": {"precisions": ["int4"]}}},
    # max_drop: no quality gate here, 12 bench rows cannot resolve 2 points (a build with a gate and a
    # broken artifact: test_pipeline_e2e::test_quality_gate_refuses_a_broken_artifact)
    "bench": {"threads": None, "warmup": 0, "repeats": 1, "speed_prompts": 2, "limit": 12, "max_drop": None},
}


def micro_tickets(repo: Path, n: int) -> None:
    """data/micro.jsonl: the first ``n`` IT tickets shipped in data/ (the e2e projects' source)."""
    (repo / "data").mkdir(parents=True, exist_ok=True)
    lines = (ROOT / "data/it_tickets/tickets.jsonl").read_text().splitlines()[:n]
    (repo / "data/micro.jsonl").write_text("\n".join(lines) + "\n")


def build_micro(repo: Path) -> Path:
    """The micro project (700 IT tickets), built with one `dvc repro` and committed."""
    micro_tickets(repo, 700)
    make_project(repo, MICRO)
    # the whole build under the socket guard (tests/netguard): every attempt to reach another machine
    # is refused and logged in netguard.log, which test_pipeline_e2e asserts stays empty
    guard = ROOT / "tests/netguard"
    t0 = time.perf_counter()
    out = sh(f"env PYTHONPATH={guard}${{PYTHONPATH:+:$PYTHONPATH}} SLMAKE_NETGUARD_LOG={repo / 'netguard.log'} dvc repro", repo)
    (repo / "first_repro.seconds").write_text(f"{time.perf_counter() - t0:.1f}\n")  # vs `dvc pull` (test_remote_e2e)
    (repo / "netguard.log").touch()
    sh("git add -A && git -c user.email=t@t -c user.name=t commit -qm built", repo)
    (repo / "first_repro.log").write_text(out.stdout)
    return repo


def logged_lines(path: Path, n: int, timeout_s: float = 30) -> list[dict]:
    """The request log's lines once it has at least ``n`` (slmake serve writes each line from a
    thread of its own just after the answer); fails with what it has after ``timeout_s``."""
    import json

    deadline = time.time() + timeout_s
    while True:
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        if len(lines) >= n or time.time() > deadline:
            assert len(lines) >= n, f"{path}: {len(lines)} line(s) after {timeout_s} s, expected {n}"
            return lines
        time.sleep(0.05)


def start_serve(repo: Path, artifact: str, *args: str, log: Path) -> tuple[subprocess.Popen, str]:
    """`slmake serve <artifact> <args>` on a free loopback port, its output to ``log``; returns the
    process and its base URL once /health answers (60 s), else fails with the server's output."""
    import socket
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "slmake.cli", "serve", artifact, "--port", str(port), *args],
                            cwd=repo, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.3)
        assert proc.poll() is None, log.read_text()
    proc.kill()
    raise AssertionError(f"server did not come up:\n{log.read_text()}")
