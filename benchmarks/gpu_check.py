"""The GPU paths, proven on a CUDA machine in one short run (issue 18 item 5): QLoRA (bitsandbytes
nf4) on SmolLM2-135M and BANKING77 for a few hundred steps, the cuda target compiled (hf_fp16,
ONNX Runtime GenAI fp16 and int4 for the CUDA provider), and each artifact benchmarked on the GPU.

    python benchmarks/gpu_check.py [--steps 300] [--limit 300] [--keep DIR] [--plan]

Prints train tokens/s, decode tok/s and accuracy per artifact, and records them
(docs/figures/gpu_check.json). Sized for under 8 minutes on one H100-class GPU.

Then the deploy package's vLLM recipe (issue 20 item 4) runs on the built ``hf_fp16_cuda`` package:
``vllm-serve.sh`` started as written, ``vllm-request.json`` sent with the test prompts' raw inputs,
answers compared with bench's and checked against the response schema. Where ``vllm`` does not
import, the step says so and why, and is recorded as skipped (the rest of the run is unaffected).

Without a CUDA device it stops before the first CUDA call, after everything that can be checked on a
CPU: the inputs exist, the spec composes and validates (`slmake check`), and the project is laid
out; `--plan` does only that and exits 0 (tests/test_gpu_check.py runs it), a real run exits 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record
from pipeline import copy_project
from stage_times import run, timed_repro

ROOT = Path(__file__).resolve().parents[1]
SMOLLM = Path(sys.prefix) / "share/slmake/models/smollm2-135m"
BANKING77 = ROOT.parent / "shared/datasets/banking77/train.csv"


def overrides(args) -> list[str]:
    """The spec: SmolLM2 + BANKING77, QLoRA nf4 for ``steps`` steps, the cuda target only."""
    return ["model=smollm2_135m_gguf", f"model.hf.path={args.model}", "data=banking77",
            f"data.source={args.data}", "train=qlora_nf4_cuda", f"train.max_steps={args.steps}",
            "train.batch_size=16", "train.threads=null", f"eval.limit={args.limit}", "targets=[cuda]",
            f"bench.limit={args.limit}", "bench.threads=null"]


def cuda_ready() -> str | None:
    """Why the GPU run cannot start here (None: it can)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        return f"bitsandbytes does not import ({e})"
    return None


def vllm_missing() -> str | None:
    """Why the vLLM recipe cannot run here (None: it can)."""
    from slmake.serve.recipes import VLLM_VERSION

    if importlib.util.find_spec("vllm") is None:
        return f"vllm is not installed (the recipe targets vllm=={VLLM_VERSION}: pip install vllm=={VLLM_VERSION})"
    return None


def _post(url: str, body: dict, timeout: float = 120) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def vllm_step(work: Path, artifact: str = "hf_fp16_cuda", rows: int = 50, start_s: float = 600) -> dict:
    """Run the package's vLLM recipe as a user would and compare its answers with bench's: the
    share that agree exactly and the share that satisfy the response schema."""
    import jsonschema

    from slmake.serve.llama_server import free_port
    from slmake.serve.recipes import VLLM_REQUEST, VLLM_SH, template_parts

    why = vllm_missing()
    if why:
        return {"status": "skipped", "why": why}
    pkg = work / "build/deploy/cuda" / artifact
    if not (pkg / VLLM_SH).is_file():
        return {"status": "skipped", "why": f"{pkg / VLLM_SH} was not written (is {artifact} built and packaged?)"}
    contract = json.loads((pkg / "serve.json").read_text())
    request = json.loads((pkg / VLLM_REQUEST).read_text())
    bench = {}
    for line in (work / "build/bench/cuda/outputs.jsonl").read_text().splitlines():
        out = json.loads(line)
        if out["artifact"] == artifact:
            bench[out["id"]] = out["text"]
    test = [json.loads(x) for x in (work / "build/data/test.jsonl").read_text().splitlines()]
    test = [r for r in test if r["id"] in bench][:rows]
    before, after = template_parts(contract["prompt_template"])
    port, log = free_port(), work / "vllm-serve.log"
    proc = subprocess.Popen([str(pkg / VLLM_SH), "--port", str(port)], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base, t0 = f"http://127.0.0.1:{port}", time.time()
    try:
        while True:
            if proc.poll() is not None:
                return {"status": "failed", "why": f"vllm-serve.sh exited {proc.returncode}: "
                        + log.read_text()[-1500:]}
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=2).status == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.time() - t0 > start_s:
                return {"status": "failed", "why": f"vLLM did not answer /health in {start_s:.0f} s (see {log})"}
            time.sleep(2)
        ready_s = time.time() - t0
        same = valid = 0
        t1 = time.time()
        for row in test:
            raw = row["prompt"][len(before):len(row["prompt"]) - len(after)]
            body = {**request, "messages": [{"role": "user", "content": raw}]}
            text = _post(f"{base}/v1/chat/completions", body)["choices"][0]["message"]["content"]
            same += text == bench[row["id"]]
            try:
                jsonschema.validate(json.loads(text) if contract["response_format"] != "text" else text,
                                    contract["response_schema"])
                valid += 1
            except (ValueError, jsonschema.ValidationError):
                pass
        n = max(len(test), 1)
        return {"status": "ok", "requests": len(test), "agree_with_bench": round(same / n, 3),
                "schema_valid": round(valid / n, 3), "start s": round(ready_s, 1),
                "sequential req/s": round(len(test) / (time.time() - t1), 2)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def train_tokens(work: Path, steps: int, batch: int) -> int:
    """Tokens the train stage saw: ``steps`` x ``batch`` rows of the curated train split, at its
    mean prompt + response length in the base model's tokenizer."""
    from slmake.base_model import load_tokenizer

    tok = load_tokenizer(work / "build/base")
    rows = [json.loads(x) for x in (work / "build/data/train.jsonl").read_text().splitlines()]
    mean = sum(len(tok(r["prompt"] + r["response"])["input_ids"]) for r in rows) / len(rows)
    return int(steps * batch * mean)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="QLoRA steps (batch 16)")
    ap.add_argument("--limit", type=int, default=300, help="test prompts evaluated and benchmarked")
    ap.add_argument("--model", type=Path, default=SMOLLM, help="SmolLM2-135M folder (install.sh puts it here)")
    ap.add_argument("--data", type=Path, default=BANKING77, help="BANKING77 train.csv")
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temp dir)")
    ap.add_argument("--plan", action="store_true", help="check and lay out the run, then stop (no GPU needed)")
    args = ap.parse_args()
    for what, path in (("--model", args.model), ("--data", args.data)):
        if not path.exists():
            sys.exit(f"gpu_check: {what} {path} does not exist")
    args.model, args.data = args.model.resolve(), args.data.resolve()

    work = args.keep or Path(tempfile.mkdtemp(prefix="slmake_gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    copy_project(work)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run([str(Path(sys.executable).parent / "slmake"), "check", "--write", "params.yaml", *overrides(args)], work, env)
    run(["sh", "-c", "git init -q && git add -A && git -c user.email=g@g -c user.name=g commit -qm gpu_check"],
        work, env)
    spec = yaml.safe_load((work / "params.yaml").read_text())
    print(f"gpu_check: {work}: train {spec['train']['method']} ({spec['train']['quant']['type']}) "
          f"{args.steps} steps, targets {list(spec['targets'])}, {args.limit} test prompts")
    why = cuda_ready()
    print(f"gpu_check: vLLM recipe step: {'skipped: ' + vllm_missing() if vllm_missing() else 'will run'}")
    if args.plan or why:
        print(f"gpu_check: stopping before the first CUDA call: {'--plan' if args.plan else why}")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        sys.exit(0 if args.plan else 2)

    import torch

    device = torch.cuda.get_device_name(0)
    times, total = timed_repro(work, env, work / "gpu_check.log")
    stage_s = dict(times)
    tokens = train_tokens(work, args.steps, spec["train"]["batch_size"])
    evaluate = json.loads((work / "reports/evaluate.json").read_text())
    bench = json.loads((work / "reports/bench/cuda.json").read_text())["cuda"]
    rows = [{"artifact": name, "exact match": b.get("exact_match"), "Δ vs fp32": b.get("delta"),
             "decode tok/s": b.get("decode_tok_s"), "TTFT ms": b.get("ttft_ms"), "size MB": b.get("size_mb"),
             "skipped": b.get("skipped")} for name, b in bench.items()]
    figures = {"device": device, "total s": round(total, 1), "train s": round(stage_s["train"], 1),
               "train tokens/s (≈)": round(tokens / stage_s["train"]),
               "fine-tuned exact match (fp32)": evaluate["finetuned"]["exact_match"], "artifacts": rows}
    vllm = vllm_step(work)
    print(f"gpu_check: vLLM recipe: {vllm['status']}" + (f": {vllm['why']}" if "why" in vllm else ""))
    figures["vLLM recipe (hf_fp16_cuda package)"] = vllm
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    record("gpu_check", figures, notes=f"{args.steps} QLoRA steps of 16, {args.limit} BANKING77 test prompts")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
