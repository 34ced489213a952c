"""What every llama-server command slmake writes shares: bench's greedy decoding and one sequence's
context. The deploy package's ``llama-server.sh`` and Modelfile (slmake.deploy), its vLLM recipe
(serve.recipes) and ``slmake serve``'s child (serve.llama_server) use it; from one place they cannot
drift apart."""

# bench's greedy as generation-config keys: temperature 0, top-k 1, no repeat penalty (the Modelfile's
# PARAMETERs, vLLM's --override-generation-config, the example requests of the package's recipes)
SAMPLING = {"temperature": 0, "top_k": 1, "repetition_penalty": 1}
# the same as llama.cpp flags; flash attention off, as bench's llama.cpp runner decodes (with it on,
# 1 answer in 200 differed on the default build)
GREEDY = ("--temp", str(SAMPLING["temperature"]), "--top-k", str(SAMPLING["top_k"]),
          "--repeat-penalty", str(SAMPLING["repetition_penalty"]), "-fa", "off")


def context_tokens(prompt_tokens: int, answer_tokens: int) -> int:
    """One sequence's context: the longest prompt plus the answer budget, rounded up to 64 (the
    Modelfile's num_ctx, and one llama-server slot's)."""
    return -(-(prompt_tokens + answer_tokens) // 64) * 64
