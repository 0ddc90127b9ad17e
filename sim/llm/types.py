"""Plain types both LLM engines share: requests, scheduler settings, the step-time model, noise.

Everything here follows ``sim/llm/SPEC.md``; the reference engine (``reference.py``) and the
compiled one (``core.py``) are two implementations of that text and are held equal by a test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MASK64 = (1 << 64) - 1
# The ITL histogram both engines fill: 20 log-spaced bounds per decade from 0.1 ms to 100 s
# (a gap equal to a bound falls in that bound's bucket, as Prometheus ``le``).
ITL_BOUNDS_S: tuple[float, ...] = tuple(float(10.0 ** (k / 20.0)) for k in range(-80, 41))


@dataclass(frozen=True)
class SchedulerConfig:
    """One replica's engine settings, as vLLM names them (``--max-num-seqs`` ...)."""

    max_num_seqs: int = 128
    max_num_batched_tokens: int = 4096
    chunked_prefill: bool = False
    block_size: int = 16
    num_blocks: int = 3328
    prefix_caching: bool = False

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "num_blocks"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"SchedulerConfig: {name} = {v!r}, must be an integer >= 1")


@dataclass(frozen=True)
class StepModel:
    """Step time in ms: ``c0 + c_prefill*P + c_decode*D + c_kv*K + c_attn*A`` times noise.

    P: prefill tokens scheduled; D: decode sequences scheduled; K: KV tokens attended (the
    context of every scheduled sequence after the step); A: prefill attention pairs
    (sum over prefill chunks of chunk * context after the step). Noise: lognormal with mean 1
    and coefficient of variation ``cv`` (0: none). Example: c0 = 20, c_decode = 0.1, 10
    decode sequences of 1,000 tokens with c_kv = 0.0002: 20 + 1 + 2 = 23 ms.
    """

    c0_ms: float
    c_prefill_ms: float = 0.0
    c_decode_ms: float = 0.0
    c_kv_ms: float = 0.0
    c_attn_ms: float = 0.0
    cv: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        for k in ("c0_ms", "c_prefill_ms", "c_decode_ms", "c_kv_ms", "c_attn_ms", "cv"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"StepModel: {k} = {v!r}, must be a finite number >= 0")

    def mean_ms(self, prefill_tokens: float, decode_seqs: float, kv_tokens: float,
                attn_pairs: float) -> float:
        """The mean step time, in the one evaluation order both engines use."""
        return (self.c0_ms + self.c_prefill_ms * prefill_tokens + self.c_decode_ms * decode_seqs
                + self.c_kv_ms * kv_tokens + self.c_attn_ms * attn_pairs)


@dataclass
class LlmRequests:
    """The stream one fleet serves: arrival times (sorted), prompt and output lengths, and
    optional prefix-cache block keys (request ``i``'s keys are
    ``keys[key_offsets[i]:key_offsets[i + 1]]``, one per full prompt block of the engine's
    block size, see ``block_keys``)."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    key_offsets: np.ndarray | None = None
    keys: np.ndarray | None = None
    _checked: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.arrival_s = np.ascontiguousarray(self.arrival_s, dtype=np.float64)
        self.prompt_tokens = np.ascontiguousarray(self.prompt_tokens, dtype=np.int64)
        self.output_tokens = np.ascontiguousarray(self.output_tokens, dtype=np.int64)
        n = len(self.arrival_s)
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise ValueError(f"LlmRequests: {n} arrivals but {len(self.prompt_tokens)} prompt "
                             f"and {len(self.output_tokens)} output lengths")
        if n and (np.any(np.diff(self.arrival_s) < 0) or not np.all(np.isfinite(self.arrival_s))):
            raise ValueError("LlmRequests: arrival_s must be finite and sorted")
        if n and (self.prompt_tokens.min() < 1 or self.output_tokens.min() < 1):
            raise ValueError("LlmRequests: prompt and output lengths must be >= 1 token")
        if self.key_offsets is None:
            self.key_offsets = np.zeros(n + 1, dtype=np.int64)
            self.keys = np.zeros(0, dtype=np.int64)
        self.key_offsets = np.ascontiguousarray(self.key_offsets, dtype=np.int64)
        self.keys = np.ascontiguousarray(self.keys, dtype=np.int64)
        if len(self.key_offsets) != n + 1:
            raise ValueError("LlmRequests: key_offsets must have one more entry than requests")

    def __len__(self) -> int:
        return len(self.arrival_s)


# --------------------------------------------------------------------------- hashing
def splitmix64(x: int) -> int:
    """One step of SplitMix64 (Steele, Lea, Flood 2014), on Python ints modulo 2**64."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def noise_factor(seed: int, replica: int, step: int, cv: float) -> float:
    """The noise of ``replica``'s ``step``-th step (from 0): lognormal, mean 1, the given cv.

    Two uniforms from SplitMix64 of (seed, replica, step), Box-Muller, ``exp(s*z - s*s/2)``
    with ``s = sqrt(log(1 + cv*cv))``; cv = 0 gives exactly 1.0. Pure: the same arguments give
    the same factor whatever order steps run in.
    """
    if cv == 0.0:
        return 1.0
    h = splitmix64((seed & MASK64) ^ splitmix64((replica << 32) ^ step))
    h2 = splitmix64(h)
    u1 = ((h >> 11) + 1) * (1.0 / 9007199254740992.0)      # (0, 1]
    u2 = (h2 >> 11) * (1.0 / 9007199254740992.0)           # [0, 1)
    z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    s2 = math.log1p(cv * cv)
    return math.exp(math.sqrt(s2) * z - s2 / 2.0)


def block_keys(hash_ids: list[list[int]], prompt_tokens: np.ndarray, block_size: int,
               hash_block_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Per request, one key per full prompt block of ``block_size`` tokens covered by its
    trace hash ids (Mooncake: one id per ``hash_block_tokens`` = 512 tokens).

    Engine block ``j`` lies in hash block ``k = j * block_size // hash_block_tokens``; its key
    chains every hash id up to ``k`` and ``j``, so two requests share block ``j``'s key exactly
    when their first ``k + 1`` hash ids agree. Keys are int64 (the SplitMix64 value's bits).
    """
    offsets = np.zeros(len(hash_ids) + 1, dtype=np.int64)
    out: list[int] = []
    for i, ids in enumerate(hash_ids):
        n_full = min(int(prompt_tokens[i]) // block_size,
                     len(ids) * hash_block_tokens // block_size)
        chain, k_done = 0, -1
        for j in range(n_full):
            k = j * block_size // hash_block_tokens
            while k_done < k:
                k_done += 1
                chain = splitmix64(chain ^ (int(ids[k_done]) & MASK64))
            key = splitmix64(chain ^ j)
            out.append(key - (1 << 64) if key >= 1 << 63 else key)
        offsets[i + 1] = len(out)
    return offsets, np.asarray(out, dtype=np.int64)


@dataclass
class LlmWindow:
    """The engine's part of one fleet window ``[t0_s, t1_s]`` (``WindowStats.llm``).

    Latency samples are of requests that reached an outcome in the window (served: all
    three; TPOT only when more than one token was made); counters are deltas over the
    window; ``*_area`` are integrals over it (divide by its length for a mean); ``*_now``
    are gauges at its end, summed over replicas; ``num_blocks`` is one replica's KV capacity.
    """

    ttft_s: np.ndarray
    tpot_s: np.ndarray
    queue_wait_s: np.ndarray
    itl_counts: np.ndarray          # int64 delta over ITL_BOUNDS_S (len + 1 buckets)
    itl_sum_s: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    preemptions: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    steps: int = 0
    running_area: float = 0.0
    waiting_area: float = 0.0
    blocks_area: float = 0.0
    running_now: int = 0
    waiting_now: int = 0
    blocks_used_now: int = 0
    num_blocks: int = 0
