"""The LLM fleet: a token-level engine (compiled or reference) behind the request-level
fleet's interface, so replay, SimSource, SimActuator and the report drive it unchanged.

Names other modules read (fixed; helper H5b's snapshot/report code relies on them):

- ``WindowStats.llm``: a ``trimtab.sim.llm.types.LlmWindow`` for the window (None for
  request-level fleets); ``merge_llm_windows(ws)`` merges consecutive ones (samples
  concatenated, counters and areas added, gauges and ``num_blocks`` from the last).
- ``RunResult.ticks`` of an llm scenario adds, per controller tick, the columns of
  ``LLM_TICK_COLUMNS``: ``ttft_p99_s`` and ``tpot_p99_s`` (seconds, of the requests that
  finished in the tick's window; NaN when none), ``kv_cache_usage`` (blocks in use over the
  blocks of live replicas, 0..1, at the tick, as vLLM's ``kv_cache_usage_perc``), ``running``
  and ``waiting`` (sequences on replicas at the tick, summed over replicas, as vLLM's
  ``num_requests_running`` / ``num_requests_waiting``; the router queue is not in ``waiting``).
- ``RunResult.summary`` of an llm scenario adds ``ttft_p50_s, ttft_p99_s, tpot_p50_s,
  tpot_p99_s, itl_p50_s, itl_p99_s, preemptions, prompt_tokens, output_tokens,
  output_tokens_per_s, throughput_rps, prefix_hit_rate``.
"""
from __future__ import annotations

LLM_TICK_COLUMNS = ("ttft_p99_s", "tpot_p99_s", "kv_cache_usage", "running", "waiting")
