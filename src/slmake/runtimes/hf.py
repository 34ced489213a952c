"""transformers runner: the fp32 reference on CPU (evaluate), and the fp16 artifact on a CUDA GPU.

One greedy loop for both devices: on CUDA, ``int(argmax)`` synchronises before the clock is read,
so TTFT is not just kernel launch time.
"""

from __future__ import annotations

from pathlib import Path

from .base import Generation, Greedy, OnToken


class HFRunner:
    def __init__(self, folder: str | Path, threads: int | None = None, device: str = "cpu"):
        """``device``: "cpu" runs fp32 (fp16 weights are upcast); "cuda" runs fp16 on the GPU."""
        import torch
        from transformers import AutoModelForCausalLM

        self.torch, self.device = torch, device
        if threads and device == "cpu":
            torch.set_num_threads(threads)
        dtype = torch.float16 if device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(device).eval()
        eos = self.model.config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])

    def generate(self, prompt_ids: list[int], max_new_tokens: int, on_token: OnToken | None = None) -> Generation:
        torch = self.torch
        run = Greedy(self.eos, on_token)
        with torch.inference_mode():
            ids = torch.tensor([prompt_ids], device=self.device)
            past = None
            for _ in range(max_new_tokens):
                res = self.model(input_ids=ids, past_key_values=past, use_cache=True)
                past = res.past_key_values
                nxt = int(res.logits[0, -1].argmax())
                if run.step(nxt):
                    break
                ids = torch.tensor([[nxt]], device=self.device)
        return run.result()

    def close(self) -> None:
        self.model = None
        if self.device == "cuda":
            self.torch.cuda.empty_cache()
