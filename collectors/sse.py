"""Time to first token and inter-token latency read off a server-sent-event stream.

An OpenAI-style streaming completion (vLLM, SGLang, TGI, llama.cpp, or a server of one's own)
sends each token or group of tokens as one event, ``data: {...}`` ended by a blank line, and
closes with ``data: [DONE]``. The proxy feeds each chunk it forwards, with the time it arrived,
to an ``SseTimer``: the first event with data is the first token (its time since the request
arrived at the proxy is the TTFT the client sees, door queue included), each later one an
inter-token gap. Events that arrive in one chunk arrived together: the gap since the previous
chunk is spread evenly over them, so the mean gap is kept and no gap reads zero (those in the
first token's chunk have no earlier chunk, and give none). Comments
(lines from ``:``), ``event:``-only keep-alives and the ``[DONE]`` sentinel are no tokens. A
stream whose unterminated event grows past ``max_event_bytes`` (not SSE after all) stops
being timed; nothing else is kept, so a stream costs a few bytes of state.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DONE = b"[DONE]"
# Adapters whose engine exports TTFT and ITL itself; behind any other server the proxy times
# streamed responses into the same families (and a mapping adapter's rules for them are
# skipped, as for the proxy's other families).
ENGINE_TIMED = frozenset({"vllm", "sglang"})
MAX_EVENT_BYTES = 1 << 20


@dataclass
class SseTimer:
    """Feed chunks in order; read ``ttft_s`` once and ``gaps_s`` after each feed."""

    started_s: float
    max_event_bytes: int = MAX_EVENT_BYTES
    ttft_s: float | None = None
    events: int = 0                  # token events seen
    _last_s: float | None = None
    _tail: bytes = b""               # the unterminated event so far
    _given_up: bool = False
    gaps_s: list[float] = field(default_factory=list)

    def feed(self, chunk: bytes, now_s: float) -> None:
        """Take one chunk; ``ttft_s`` is set at the first token, ``gaps_s`` holds this chunk's
        inter-token gaps (replaced on every call)."""
        self.gaps_s = []
        if self._given_up or not chunk:
            return
        data = (self._tail + chunk).replace(b"\r\n", b"\n")
        parts = data.split(b"\n\n")
        self._tail = parts.pop()
        if len(self._tail) > self.max_event_bytes:
            self._given_up, self._tail = True, b""
            return
        tokens = sum(1 for p in parts if _is_token(p))
        if not tokens:
            return
        self.events += tokens
        if self._last_s is None:
            self.ttft_s = now_s - self.started_s   # more in the same chunk: no gap to spread
        else:
            self.gaps_s = [(now_s - self._last_s) / tokens] * tokens
        self._last_s = now_s


def _is_token(event: bytes) -> bool:
    """An event that carries data other than the ``[DONE]`` sentinel."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].strip() != DONE
    return False
