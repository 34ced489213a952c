"""The fp32 reference: transformers' own greedy generation on the merged safetensors folder."""

from __future__ import annotations

from pathlib import Path

from ..targets.base import Generation, Stopwatch


class HFRunner:
    def __init__(self, folder: str | Path, threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM

        if threads:
            torch.set_num_threads(threads)
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        self.model.eval()
        eos = self.model.config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation:
        import torch

        watch = Stopwatch()
        out: list[int] = []
        with torch.inference_mode():
            ids = torch.tensor([prompt_ids])
            past = None
            for _ in range(max_new_tokens):
                res = self.model(input_ids=ids, past_key_values=past, use_cache=True)
                past = res.past_key_values
                nxt = int(res.logits[0, -1].argmax())
                watch.mark_first()
                if nxt in self.eos:
                    break
                out.append(nxt)
                ids = torch.tensor([[nxt]])
        return watch.result(out)

    def close(self) -> None:
        del self.model
