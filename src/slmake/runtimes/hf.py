"""transformers runner: the fp32 reference on CPU (evaluate), and the fp16 artifact on a CUDA GPU.

One greedy loop for both devices: on CUDA, ``int(argmax)`` synchronises before the clock is read,
so TTFT is not just kernel launch time. ``generate_batch`` is evaluate's loop: a batch reads the
weights once per step for every row, which on CPU is most of the cost of a small model's decode.
A ``constraint`` (guide.Guide) masks the logits with llguidance, per row in a batch.
"""

from __future__ import annotations

from pathlib import Path

from .base import Generation, Greedy, OnToken


class HFRunner:
    supports_constraint = True     # decodes under a guide.Guide (serve, evaluate, bench)
    supports_logprobs = True       # generate(..., logprobs=k): the logits are slmake's own

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
        self.n_vocab = int(self.model.get_output_embeddings().weight.shape[0])   # the logits' width

    def check_constraint(self, constraint) -> None:
        """Raise ValueError unless llguidance compiles the constraint's grammar for this vocabulary
        (serve checks once at start)."""
        constraint.matcher(self.eos, self.n_vocab)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, on_token: OnToken | None = None,
                 ignore_eos: bool = False, constraint=None, logprobs: int | None = None) -> Generation:
        torch = self.torch
        matcher = constraint.matcher(self.eos, self.n_vocab) if constraint is not None else None
        run = Greedy(self.eos, on_token, ignore_eos, matcher, logprobs)
        with torch.inference_mode():
            ids = torch.tensor([prompt_ids], device=self.device)
            past = None
            for _ in range(max_new_tokens):
                res = self.model(input_ids=ids, past_key_values=past, use_cache=True)
                past = res.past_key_values
                nxt = run.pick(res.logits[0, -1])
                if run.step(nxt):
                    break
                ids = torch.tensor([[nxt]], device=self.device)
        return run.result()

    def generate_batch(self, prompts: list[list[int]], max_new_tokens: int, constraint=None) -> list[list[int]]:
        """Greedy tokens (without the final EOS) of several prompts at once: left padding with an
        attention mask and per-row positions, one KV cache; finished rows leave the batch. The
        result depends on the batch's composition in the last bits only, so callers fix it.
        ``constraint``: every row decodes under the grammar (a matcher per row)."""
        torch = self.torch
        matchers = [constraint.matcher(self.eos, self.n_vocab) for _ in prompts] if constraint is not None else None
        width = max(len(p) for p in prompts)
        pad = min(self.eos)  # any id: padded positions are masked out
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out: list[list[int]] = [[] for _ in prompts]
        rows = list(range(len(prompts)))  # prompt index of each row still in the batch
        past = None
        with torch.inference_mode():
            for step in range(max_new_tokens):
                res = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=past,
                                 use_cache=True, logits_to_keep=1)
                past = res.past_key_values
                if matchers is None:
                    nxt = res.logits[:, -1].argmax(-1).tolist()
                else:   # rows[i] is the prompt of batch row i; an end-of-generation id is never consumed
                    nxt = [matchers[r].pick(res.logits[i, -1]) for i, r in enumerate(rows)]
                    for r, t in zip(rows, nxt):
                        if t not in self.eos:
                            matchers[r].accept(t)
                keep = [i for i, t in enumerate(nxt) if t not in self.eos]
                for i in keep:
                    out[rows[i]].append(nxt[i])
                if not keep or step == max_new_tokens - 1:
                    break
                if len(keep) < len(rows):
                    sel = torch.tensor(keep, device=self.device)
                    past.batch_select_indices(sel)
                    mask, pos, rows = mask[sel], pos[sel], [rows[i] for i in keep]
                    nxt = [nxt[i] for i in keep]
                ids = torch.tensor(nxt, device=self.device)[:, None]
                mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=-1)
                pos = pos[:, -1:] + 1
        return out

    def close(self) -> None:
        self.model = None
        if self.device == "cuda":
            self.torch.cuda.empty_cache()
