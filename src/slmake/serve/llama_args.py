"""What every llama-server command slmake writes shares: bench's greedy decoding and one sequence's
context. Two commands use it, the deploy package's ``llama-server.sh`` (slmake.deploy) and
``slmake serve``'s child (serve.llama_server); from one list they cannot drift apart."""

# temperature 0, top-k 1, no repeat penalty (bench's greedy); flash attention off, as bench's
# llama.cpp runner decodes (with it on, 1 answer in 200 differed on the default build)
GREEDY = ("--temp", "0", "--top-k", "1", "--repeat-penalty", "1", "-fa", "off")


def context_tokens(prompt_tokens: int, answer_tokens: int) -> int:
    """One sequence's context: the longest prompt plus the answer budget, rounded up to 64 (the
    Modelfile's num_ctx, and one llama-server slot's)."""
    return -(-(prompt_tokens + answer_tokens) // 64) * 64
