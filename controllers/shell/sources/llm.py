"""The Snapshot's LLM fields (FieldGroup.LLM) from the sidecar's trimtab_llm_* series, written once for every source.

The sidecar's adapters re-export vLLM's and SGLang's series under one set of names
(collectors/names.py), so a source reads every engine alike. What the tables say:
``SUMMED`` gauges are summed over pods (sequences), ``MEAN`` gauges averaged (a ratio),
``RATES`` counters become per-second rates, ``HISTOGRAMS`` are window increases per bucket.
The prefix-cache hit ratio is hits / queries over the window (vLLM's counters) or, when an
engine reports only a ratio (SGLang's ``cache_hit_rate``), that ratio's mean.

Which target is an LLM one is learnt, not configured: a target that exports an engine's
running/waiting/KV-cache gauges is one (``CORE``); once seen, a read that cannot give them
names ``FieldGroup.LLM`` missing, while a target never seen with them (a request-level
server) leaves the fields None and names nothing.
"""
from __future__ import annotations

import math
from typing import Mapping

from trimtab.collectors import names as n
from trimtab.controllers.core.types import LatencyHistogram

SUMMED: dict[str, str] = {"engine_running": n.LLM_RUNNING, "engine_waiting": n.LLM_WAITING}
MEAN: dict[str, str] = {"kv_cache_usage_ratio": n.KV_CACHE_USAGE}
RATES: dict[str, str] = {"prompt_tokens_rps": n.LLM_PROMPT_TOKENS,
                         "generation_tokens_rps": n.LLM_GENERATION_TOKENS,
                         "preemptions_rps": n.LLM_PREEMPTIONS}
HISTOGRAMS: dict[str, str] = {"ttft": n.LLM_TTFT, "tpot": n.LLM_TPOT, "itl": n.LLM_ITL}
PREFIX_HITS, PREFIX_QUERIES = n.LLM_PREFIX_CACHE_HITS, n.LLM_PREFIX_CACHE_QUERIES
PREFIX_RATIO = n.LLM_PREFIX_CACHE_HIT_RATIO
PREFIX_FIELD = "prefix_cache_hit_ratio"
# Without these an LLM target's snapshot names FieldGroup.LLM missing.
CORE: tuple[str, ...] = ("engine_running", "engine_waiting", "kv_cache_usage_ratio")
FIELDS: tuple[str, ...] = (*SUMMED, *MEAN, *RATES, *HISTOGRAMS, PREFIX_FIELD)


def counter_series(metric: str) -> str:
    """The exposed series of a counter: ``trimtab_llm_prompt_tokens_total``."""
    return n.BY_NAME[metric].exposed[0]


def finite(value: float | None) -> float | None:
    """``value`` unless it is None, NaN or infinite (then None: unread, never 0)."""
    return value if value is not None and math.isfinite(value) else None


def histogram(cumulative: Mapping[float, float]) -> LatencyHistogram | None:
    """Cumulative counts by ``le`` (+Inf included or not) as a LatencyHistogram; None if empty
    or not finite. Counts that fall with ``le`` (a reset mid-window) are clipped at 0."""
    if not cumulative or any(not math.isfinite(v) for v in cumulative.values()):
        return None
    bounds = tuple(sorted(le for le in cumulative if math.isfinite(le)))
    cum = [max(0.0, cumulative[b]) for b in bounds]
    cum.append(max(0.0, cumulative.get(math.inf, cum[-1] if cum else 0.0)))
    counts, prev = [], 0.0
    for c in cum:
        counts.append(int(round(max(0.0, c - prev))))
        prev = max(prev, c)
    return LatencyHistogram(bounds_s=bounds, counts=tuple(counts))


def prefix_ratio(hits_rps: float | None, queries_rps: float | None,
                 reported: float | None) -> float | None:
    """Hits / queries when the counters moved, else the engine's own ratio, else None.

    E.g. 30 of 120 queried tokens found: 0.25; no query in the window (0 / 0): the ratio the
    engine reports, or None.
    """
    if hits_rps is not None and queries_rps is not None and queries_rps > 0:
        return min(1.0, max(0.0, hits_rps / queries_rps))
    return finite(reported)


def is_llm(values: Mapping[str, object]) -> bool:
    """True when any core engine gauge came back: the target is an LLM server."""
    return any(values.get(f) is not None for f in CORE)


def incomplete(values: Mapping[str, object]) -> bool:
    """True when a core engine gauge is missing (an LLM target then names the group)."""
    return any(values.get(f) is None for f in CORE)
