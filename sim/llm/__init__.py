"""LLM serving at token level: a continuous-batching engine with a paged KV cache."""
