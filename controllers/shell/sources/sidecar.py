"""Direct sidecar scrape source for small setups without Prometheus: rates from deltas between ticks."""
from __future__ import annotations

import math
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from prometheus_client.parser import text_string_to_metric_families

from trimtab.collectors import names as n
from trimtab.controllers.shell.sources import llm
from trimtab.controllers.shell.sources.base import Source, TargetSelector
from trimtab.controllers.core.types import (FIELD_ARRIVAL_RATE, FIELD_IN_FLIGHT, FIELD_LATENCY,
                               FIELD_LLM, FIELD_QUEUE_DEPTH, FIELD_REPLICAS, LatencyHistogram,
                               Snapshot)

ALL = frozenset({FIELD_ARRIVAL_RATE, FIELD_QUEUE_DEPTH, FIELD_IN_FLIGHT, FIELD_LATENCY,
                 FIELD_REPLICAS})


@dataclass
class Scrape:
    """The numbers one /metrics page gave, summed over the target's model label if set."""

    requests: dict[str, float] = field(default_factory=dict)    # outcome -> counter
    buckets: dict[float, float] = field(default_factory=dict)   # le -> cumulative counter
    queue: float = 0.0
    in_flight: float = 0.0
    batch_size_sum: float = 0.0
    batch_count: float = 0.0
    batch_time_sum: float = 0.0
    # An LLM engine's series (trimtab_llm_*, llm.py): gauges and counters by metric name,
    # histogram buckets by metric name then le.
    gauges: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    llm_buckets: dict[str, dict[float, float]] = field(default_factory=dict)


_LLM_GAUGES = frozenset({*llm.SUMMED.values(), *llm.MEAN.values(), llm.PREFIX_RATIO})
_LLM_COUNTERS = {llm.counter_series(m): m for m in (*llm.RATES.values(), llm.PREFIX_HITS,
                                                    llm.PREFIX_QUERIES)}
_LLM_BUCKETS = {m + "_bucket": m for m in llm.HISTOGRAMS.values()}


def parse_page(text: str, model: str | None) -> Scrape:
    out = Scrape()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if model is not None and s.labels.get("model", model) != model:
                continue
            name, v = s.name, s.value
            if name in _LLM_GAUGES:
                out.gauges[name] = out.gauges.get(name, 0.0) + v
            elif name in _LLM_COUNTERS:
                m = _LLM_COUNTERS[name]
                out.counters[m] = out.counters.get(m, 0.0) + v
            elif name in _LLM_BUCKETS:
                per_le = out.llm_buckets.setdefault(_LLM_BUCKETS[name], {})
                le = float(s.labels["le"])
                per_le[le] = per_le.get(le, 0.0) + v
            elif name == n.BY_NAME[n.REQUESTS].exposed[0]:
                k = s.labels.get("outcome", "")
                out.requests[k] = out.requests.get(k, 0.0) + v
            elif name == n.REQUEST_DURATION + "_bucket":
                le = float(s.labels["le"])
                out.buckets[le] = out.buckets.get(le, 0.0) + v
            elif name == n.QUEUE_DEPTH:
                out.queue += v
            elif name == n.IN_FLIGHT:
                out.in_flight += v
            elif name == n.BATCH_SIZE + "_sum":
                out.batch_size_sum += v
            elif name == n.BATCH_SIZE + "_count":
                out.batch_count += v
            elif name == n.BATCH_DURATION + "_sum":
                out.batch_time_sum += v
    return out


class SidecarSource(Source):
    """``SidecarSource({target key: [metrics URLs]})``; the first read of a pod gives no rates.

    Counter resets (a restarted sidecar) are treated like Prometheus does: the new value is
    the increase. A pod that does not answer is left out; none answering -> all missing.
    """

    name = "sidecar"

    def __init__(self, endpoints: dict[str, list[str]], timeout_s: float = 2.0) -> None:
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self._prev: dict[str, tuple[float, Scrape]] = {}
        self._llm_targets: set[str] = set()   # targets seen exporting an LLM engine's gauges
        self.last_errors: list[str] = []

    def _fetch(self, url: str) -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                return resp.read().decode()
        except (OSError, ValueError):
            return None

    def read(self, targets: Sequence[TargetSelector], now_s: float,
             window_s: float) -> dict[str, Snapshot]:
        urls = sorted({u for t in targets for u in self.endpoints.get(t.key, [])})
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(urls)))) as pool:
            pages = dict(zip(urls, pool.map(self._fetch, urls)))
        self.last_errors = ["unreachable" for u in urls if pages[u] is None]
        return {t.key: self._one(t, pages, now_s, window_s) for t in targets}

    def _one(self, t: TargetSelector, pages: dict[str, str | None], now_s: float,
             window_s: float) -> Snapshot:
        model = t.matchers.get("model")
        arrival = completion = None
        queue = in_flight = 0.0
        up = 0
        rated = 0
        outcomes: dict[str, float] = {}
        buckets: dict[float, float] = {}
        pages_read: list[Scrape] = []
        rates: dict[str, float] = {}
        llm_buckets: dict[str, dict[float, float]] = {}
        for url in self.endpoints.get(t.key, []):
            text = pages.get(url)
            if text is None:
                continue
            try:
                cur = parse_page(text, model)
            except ValueError:
                continue
            up += 1
            queue += cur.queue
            in_flight += cur.in_flight
            pages_read.append(cur)
            prev = self._prev.get(url)
            self._prev[url] = (now_s, cur)
            if prev is None or now_s <= prev[0]:
                continue
            dt_s = now_s - prev[0]
            rated += 1
            for m, v in cur.counters.items():
                d = v - prev[1].counters.get(m, 0.0)
                rates[m] = rates.get(m, 0.0) + (v if d < 0 else d) / dt_s
            for m, per_le in cur.llm_buckets.items():
                was = prev[1].llm_buckets.get(m, {})
                into = llm_buckets.setdefault(m, {})
                for le, v in per_le.items():
                    d = v - was.get(le, 0.0)
                    into[le] = into.get(le, 0.0) + (v if d < 0 else d)
            for k, v in cur.requests.items():
                d = v - prev[1].requests.get(k, 0.0)
                outcomes[k] = outcomes.get(k, 0.0) + (v if d < 0 else d) / dt_s
            for le, v in cur.buckets.items():
                d = v - prev[1].buckets.get(le, 0.0)
                buckets[le] = buckets.get(le, 0.0) + (v if d < 0 else d)
        if rated:
            arrival = sum(outcomes.values())
            completion = outcomes.get("ok", 0.0)
        latency = None
        if buckets:
            bounds = tuple(sorted(le for le in buckets if math.isfinite(le)))
            cum = [buckets[b] for b in bounds] + [buckets.get(math.inf, 0.0)]
            counts, prev_c = [], 0.0
            for c in cum:
                counts.append(int(round(max(0.0, c - prev_c))))
                prev_c = max(prev_c, c)
            latency = LatencyHistogram(bounds, tuple(counts))
        values = _llm_values(pages_read, rates, llm_buckets, rated > 0)
        if llm.is_llm(values):
            self._llm_targets.add(t.key)
        is_llm = t.key in self._llm_targets
        if not up:
            return Snapshot(time_s=now_s, window_s=window_s,
                            missing=ALL | ({FIELD_LLM} if is_llm else set()))
        missing = frozenset(f for f, v in ((FIELD_ARRIVAL_RATE, arrival),
                                           (FIELD_LATENCY, latency)) if v is None)
        if is_llm and llm.incomplete(values):
            missing |= {FIELD_LLM}
        return Snapshot(time_s=now_s, window_s=window_s, arrival_rate_rps=arrival,
                        completion_rate_rps=completion, queue_depth=queue, in_flight=in_flight,
                        latency=latency, ready_replicas=up, missing=missing,
                        **(values if is_llm else {}))


def _llm_values(pages: list[Scrape], rates: dict[str, float],
                buckets: dict[str, dict[float, float]], rated: bool) -> dict[str, object]:
    """The Snapshot's LLM fields from this tick's pages (gauges: summed, or averaged over the
    pods that export them) and the counter and bucket increases since the last tick."""
    values: dict[str, object] = {}
    for f, m in llm.SUMMED.items():
        seen = [p.gauges[m] for p in pages if m in p.gauges]
        values[f] = llm.finite(sum(seen)) if seen else None
    for f, m in llm.MEAN.items():
        seen = [p.gauges[m] for p in pages if m in p.gauges]
        values[f] = llm.finite(sum(seen) / len(seen)) if seen else None
    for f, m in llm.RATES.items():
        values[f] = llm.finite(rates.get(m, 0.0)) if rated and any(
            m in p.counters for p in pages) else None
    ratios = [p.gauges[llm.PREFIX_RATIO] for p in pages if llm.PREFIX_RATIO in p.gauges]
    values[llm.PREFIX_FIELD] = llm.prefix_ratio(
        rates.get(llm.PREFIX_HITS), rates.get(llm.PREFIX_QUERIES),
        sum(ratios) / len(ratios) if ratios else None)
    for f, m in llm.HISTOGRAMS.items():
        values[f] = llm.histogram(buckets.get(m, {})) if rated else None
    return values
