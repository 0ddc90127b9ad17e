"""Test builders for the LLM engines: request streams, scheduler settings and step models with
small defaults (a replica that feels KV pressure within a few dozen requests)."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from trimtab.sim.fleet.types import PENDING
from trimtab.sim.llm.closed_form import MG1_STEP
from trimtab.sim.llm.types import LlmRequests, SchedulerConfig, StepModel, block_keys

# The M/G/1 closed-form cases both engines are checked on (keyword arguments of mg1_check).
MG1_CASES = {
    "mg1": dict(),
    "mg1-noise": dict(step=replace(MG1_STEP, cv=0.5), rate_rps=30.0),
    "md1": dict(prompt_values=(512,), prompt_probs=None,
                step=StepModel(c0_ms=4.0, c_prefill_ms=0.02), rate_rps=40.0),
}

Lengths = int | tuple[int, int] | Sequence[int]

SCHED_DEFAULTS = dict(max_num_seqs=8, max_num_batched_tokens=256, chunked_prefill=False,
                      block_size=16, num_blocks=64, prefix_caching=False)
STEP_DEFAULTS = dict(c0_ms=10.0, c_prefill_ms=0.05, c_decode_ms=0.2, c_kv_ms=0.0005,
                     c_attn_ms=0.0, cv=0.0)


def _lengths(spec: Lengths, n: int, rng: np.random.Generator) -> np.ndarray:
    """An int: all equal; a pair (lo, hi): uniform on lo..hi inclusive; else the values."""
    if isinstance(spec, (int, np.integer)):
        return np.full(n, int(spec), dtype=np.int64)
    if isinstance(spec, tuple) and len(spec) == 2:
        return rng.integers(spec[0], spec[1] + 1, n).astype(np.int64)
    out = np.asarray(spec, dtype=np.int64)
    if len(out) != n:
        raise ValueError(f"builders: {len(out)} lengths given for {n} requests")
    return out


def requests(n: int = 20, rate_rps: float = 2.0, prompt: Lengths = (16, 200),
             output: Lengths = (1, 40), seed: int = 0, *,
             arrival_s: Sequence[float] | None = None, prefix_groups: int = 0,
             shared_blocks: int = 4, block_size: int = 16) -> LlmRequests:
    """``n`` requests: Poisson arrivals at ``rate_rps`` from t = 0 (or ``arrival_s``), lengths
    as ``_lengths``. With ``prefix_groups`` > 0 each request picks a group and its first
    ``shared_blocks`` prompt blocks (of ``block_size`` tokens) carry the group's keys; the
    rest are its own."""
    rng = np.random.default_rng(seed)
    arr = (np.cumsum(rng.exponential(1.0 / rate_rps, n)) if arrival_s is None
           else np.asarray(arrival_s, dtype=np.float64))
    p, o = _lengths(prompt, n, rng), _lengths(output, n, rng)
    if prefix_groups <= 0:
        return LlmRequests(arr, p, o)
    groups = rng.integers(0, prefix_groups, n)
    hash_ids = []
    for i in range(n):
        nb = -(-int(p[i]) // block_size)
        own = [1_000_000 * (i + 1) + j for j in range(nb)]
        hash_ids.append([1000 * int(groups[i]) + j if j < shared_blocks else own[j]
                         for j in range(nb)])
    offsets, keys = block_keys(hash_ids, p, block_size, block_size)
    return LlmRequests(arr, p, o, offsets, keys)


def sched(**overrides) -> SchedulerConfig:
    """A small replica: 8 sequences, 256 tokens a step, 64 blocks of 16 (see SCHED_DEFAULTS)."""
    return SchedulerConfig(**{**SCHED_DEFAULTS, **overrides})


def step(**overrides) -> StepModel:
    """10 ms a step plus small per-token terms, no noise (see STEP_DEFAULTS)."""
    return StepModel(**{**STEP_DEFAULTS, **overrides})


def fleet(engine_cls, reqs: LlmRequests, replicas: int = 1, *, sched_cfg=None, step_model=None,
          queue_first: bool = False, **kw):
    """An engine with ``replicas`` READY at t = 0; with ``queue_first`` the arrivals at t = 0
    wait in the router queue until then, so one step takes them together (else the first
    arrival starts a step alone)."""
    f = engine_cls(reqs, sched_cfg or sched(), step_model or step(), **kw)
    if queue_first:
        f.advance(0.0)
    for _ in range(replicas):
        f.add_replica(0.0)
    return f


def drain(f, chunk_s: float = 100.0, max_s: float = 1e6) -> None:
    """Advance until every request has an outcome (or ``max_s``: then fail loudly)."""
    while (f.outcome == PENDING).any():
        if f.now_s >= max_s:
            raise AssertionError(f"builders.drain: requests still pending at {f.now_s} s")
        f.advance(f.now_s + chunk_s)


def explicit(arrival_s: Sequence[float], prompt: Sequence[int], output: Sequence[int],
             keys: Sequence[Sequence[int]] | None = None) -> LlmRequests:
    """A hand-written stream; ``keys[i]`` are request ``i``'s prefix block keys."""
    if keys is None:
        return LlmRequests(np.asarray(arrival_s, float), np.asarray(prompt), np.asarray(output))
    offsets = np.concatenate([[0], np.cumsum([len(k) for k in keys])]).astype(np.int64)
    flat = np.asarray([k for ks in keys for k in ks], dtype=np.int64)
    return LlmRequests(np.asarray(arrival_s, float), np.asarray(prompt), np.asarray(output),
                       offsets, flat)
