"""GPU check of the cuda target's runtime path (run where a CUDA device exists):
compile hf_fp16 from a tiny random Llama -> cuda.open_runner(<art>_cuda) -> HFRunner(device="cuda"),
and compare its greedy tokens with the same files on the CPU (`_cpu_check`, fp32)."""

import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from slmake.targets import cuda
from slmake.targets.base import BuildContext

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import record

with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(d / "merged")
    ctx = BuildContext(d / "merged", d / "out", d / "data", d / "logs")
    (d / "out").mkdir()
    arts = {a.name: a for a in cuda.compile(ctx, {"hf_fp16": True, "onnx_genai": {"precisions": []}})}
    print("probe:", cuda.probe())
    gpu = cuda.open_runner(arts["hf_fp16_cuda"], d / "out", {"threads": 4})
    cpu = cuda.open_runner(arts["hf_fp16_cpu_check"], d / "out", {"threads": 4})
    prompts = [[1] + [(i * 37 + j * 11) % 500 + 3 for j in range(12)] for i in range(8)]
    same, runs = 0, []
    for p in prompts:
        t0 = time.perf_counter()
        g = gpu.generate(p, 24)
        c = cpu.generate(p, 24)
        same += g.tokens[:8] == c.tokens[:8]
        runs.append({"tokens": len(g.tokens), "ttft ms": round(g.ttft_s * 1e3, 1),
                     "decode ms": round(g.decode_s * 1e3, 1),
                     "first 8 equal to cpu fp32": g.tokens[:8] == c.tokens[:8]})
        print(f"gpu {len(g.tokens)} tok ttft {g.ttft_s * 1e3:.1f} ms decode {g.decode_s * 1e3:.1f} ms; "
              f"first 8 equal to cpu fp32: {g.tokens[:8] == c.tokens[:8]}")
    print(f"{same}/{len(prompts)} prompts: first 8 greedy tokens equal (fp16 GPU vs fp32 CPU)")
    gpu.close()
    record("cuda_runner_check", {"probe": str(cuda.probe()), "prompts": runs,
                                 "prompts with equal first 8 tokens": f"{same}/{len(prompts)}"})
    sys.exit(0 if same >= len(prompts) - 1 else 1)
