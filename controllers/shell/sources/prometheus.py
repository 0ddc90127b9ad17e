"""Prometheus HTTP API source: a fixed handful of batched instant queries per tick, for any number of targets."""
from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

from trimtab.collectors import names as n
from trimtab.common.prometheus import PromClient
from trimtab.controllers.shell.clock import WallClock
from trimtab.controllers.shell.sources import llm
from trimtab.controllers.shell.sources.base import Source, TargetSelector
from trimtab.controllers.core.types import (FIELD_ARRIVAL_RATE, FIELD_IN_FLIGHT, FIELD_LATENCY,
                               FIELD_LLM, FIELD_QUEUE_DEPTH, FIELD_REPLICAS, LatencyHistogram,
                               Snapshot)

_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Fields whose absence means the policy would see imputed data (so: no scale-down).
EXPECTED = (FIELD_ARRIVAL_RATE, FIELD_QUEUE_DEPTH, FIELD_IN_FLIGHT, FIELD_LATENCY,
            FIELD_REPLICAS)
# The query each expected field is read from: an answer without this target's series is
# "no series" (Snapshot.empty), a query that failed is not.
QUERY_OF = {FIELD_ARRIVAL_RATE: "outcomes", FIELD_QUEUE_DEPTH: "queue",
            FIELD_IN_FLIGHT: "in_flight", FIELD_LATENCY: "latency", FIELD_REPLICAS: "replicas",
            FIELD_LLM: "llm"}
# The label the two LLM queries tag each part of their answer with (a Snapshot field name).
FIELD_LABEL = "trimtab_field"


class SourceUnavailable(Exception):
    """Prometheus could not be reached or answered with an error for every query."""


@dataclass(frozen=True)
class Query:
    field: str
    promql: str
    extra: tuple[str, ...] = ()     # labels besides the target keys in the result


def _escape(value: str) -> str:
    return re.escape(value).replace("\\", "\\\\").replace('"', '\\"')


MAX_REGEX_VALUES = 50


def selector(keys: tuple[str, ...], members: Sequence[TargetSelector]) -> str:
    """``{namespace="prod", model=~"a|b"}`` for a group; results are matched back exactly.

    One value is an equality matcher; more than MAX_REGEX_VALUES values are left out of the
    selector (a long alternation costs Prometheus more than the extra series cost us: the
    answers are filtered by exact label values here anyway).
    """
    parts = []
    for k in keys:
        values = sorted({m.matchers[k] for m in members})
        if len(values) == 1:
            parts.append(f'{k}="{_string(values[0])}"')
        elif len(values) <= MAX_REGEX_VALUES:
            parts.append(f'{k}=~"{"|".join(_escape(v) for v in values)}"')
    return "{" + ", ".join(parts) + "}" if parts else ""


def _string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def queries_for(keys: tuple[str, ...], selector: str, window_s: float) -> list[Query]:
    """The PromQL for one group of targets sharing label keys; ``selector`` is ``{k=~"a|b"}``."""
    by = ", ".join(keys)
    w = f"[{int(math.ceil(window_s))}s]"
    sel = selector
    req, dur = n.BY_NAME[n.REQUESTS].exposed[0], n.REQUEST_DURATION + "_bucket"
    bsz, bdur = n.BATCH_SIZE, n.BATCH_DURATION
    inflight, queue = n.IN_FLIGHT, n.QUEUE_DEPTH
    # PromQL forbids a label in both on() and group_left(): copy only the others.
    extra = ", ".join(k for k in keys if k not in ("namespace", "pod"))
    pod_by = ", ".join(dict.fromkeys(("namespace", "pod", *keys)))
    pods = f"(max by ({pod_by}) ({inflight}{sel}) * 0 + 1)"
    return [
        Query("outcomes", f"sum by ({by}, outcome) (rate({req}{sel}{w}))", ("outcome",)),
        Query("queue", f"sum by ({by}) (avg_over_time({queue}{sel}{w}))"),
        Query("in_flight", f"sum by ({by}) (avg_over_time({inflight}{sel}{w}))"),
        Query("latency", f"sum by ({by}, le) (increase({dur}{sel}{w}))", ("le",)),
        Query("batch_size_sum", f"sum by ({by}, pod) (rate({bsz}_sum{sel}{w}))", ("pod",)),
        Query("batch_count", f"sum by ({by}, pod) (rate({bsz}_count{sel}{w}))", ("pod",)),
        Query("batch_time_sum", f"sum by ({by}, pod) (rate({bdur}_sum{sel}{w}))", ("pod",)),
        Query("replicas", f"count by ({by}) ({inflight}{sel})"),
        # GPU series carry namespace/pod (from the scrape) but not the target's labels: join
        # them on the pod through the in-flight gauge, whose pods are the target's.
        Query("gpu_memory", f"max by ({by}) (({n.GPU_MEMORY_USED} / on (namespace, pod, gpu,"
              f" uuid) {n.GPU_MEMORY_TOTAL}) * on (namespace, pod) group_left({extra}) {pods})"),
        Query("gpu_busy", f"avg by ({by}) (avg_over_time({n.GPU_UTILIZATION}{w})"
              f" * on (namespace, pod) group_left({extra}) {pods})"),
        Query("newest", f"max by ({by}) (timestamp({inflight}{sel}))"),
        Query("llm", llm_scalars(by, sel, w), (FIELD_LABEL,)),
        Query("llm_latency", llm_histograms(by, sel, w), ("le", FIELD_LABEL)),
    ]


def _tagged(expr: str, field: str) -> str:
    return f'label_replace({expr}, "{FIELD_LABEL}", "{field}", "", "")'


def llm_scalars(by: str, sel: str, w: str) -> str:
    """One query for every scalar LLM field, each part tagged with its field name.

    The prefix-cache ratio is hits / queries where the engine counts both (vLLM), else the
    ratio it reports (SGLang): ``or`` keeps the left side where both exist.
    """
    parts = [_tagged(f"sum by ({by}) (avg_over_time({m}{sel}{w}))", f)
             for f, m in llm.SUMMED.items()]
    parts += [_tagged(f"avg by ({by}) (avg_over_time({m}{sel}{w}))", f)
              for f, m in llm.MEAN.items()]
    parts += [_tagged(f"sum by ({by}) (rate({llm.counter_series(m)}{sel}{w}))", f)
              for f, m in llm.RATES.items()]
    hits, queries = (f"sum by ({by}) (rate({llm.counter_series(m)}{sel}{w}))"
                     for m in (llm.PREFIX_HITS, llm.PREFIX_QUERIES))
    parts.append(_tagged(f"{hits} / {queries}", llm.PREFIX_FIELD))
    parts.append(_tagged(f"avg by ({by}) (avg_over_time({llm.PREFIX_RATIO}{sel}{w}))",
                         llm.PREFIX_FIELD))
    return " or ".join(parts)


def llm_histograms(by: str, sel: str, w: str) -> str:
    """One query for the TTFT, TPOT and ITL histograms: window increases per bucket."""
    return " or ".join(_tagged(f"sum by ({by}, le) (increase({m}_bucket{sel}{w}))", f)
                       for f, m in llm.HISTOGRAMS.items())


class PrometheusSource(Source):
    """``PrometheusSource(url, timeout_s, staleness_s)``: batched queries over all targets.

    Targets are grouped by their matcher label keys; each group costs ``len(queries_for())``
    requests per tick however many targets it holds (the values go into one regex matcher).
    Unreachable -> SourceUnavailable (the loop holds everything); one failed query -> that
    field missing for the group; the LLM fields come from two more queries (``llm.py``:
    named missing only for a target seen exporting an engine's gauges); a query answered without the target's series -> missing and
    ``empty`` (no series: e.g. no pod up); NaN -> missing; newest sample older than
    ``staleness_s`` -> every field stale.
    """

    name = "prometheus"

    def __init__(self, url: str, *, timeout_s: float = 5.0, staleness_s: float = 60.0,
                 unix_time: Callable[[], float] = WallClock.unix_s, parallel: int = 4) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.staleness_s = staleness_s
        self.unix_time = unix_time
        self.parallel = parallel
        self.last_errors: list[str] = []
        self.last_causes: list[str] = []      # the messages behind last_errors, for the log
        self.requests_made = 0
        self._client = PromClient(self.url, timeout_s)
        self._llm_targets: set[str] = set()   # targets seen exporting an LLM engine's gauges

    def _query(self, promql: str, at_s: float) -> list[dict]:
        """One instant query: [] is no series; QueryFailed (a ValueError) or OSError if not."""
        self.requests_made += 1
        return self._client.instant(promql, at_s, timeout_s=self.timeout_s)

    def read(self, targets: Sequence[TargetSelector], now_s: float,
             window_s: float) -> dict[str, Snapshot]:
        at_s = self.unix_time()
        groups: dict[tuple[str, ...], list[TargetSelector]] = {}
        for t in targets:
            for k in t.matchers:
                if not _LABEL.match(k):
                    raise ValueError(f"target {t.key}: matcher label {k!r} is not a label name")
            groups.setdefault(tuple(sorted(t.matchers)), []).append(t)
        self.last_errors = []
        self.last_causes = []
        jobs = []
        for keys, members in groups.items():
            jobs += [(keys, q) for q in queries_for(keys, selector(keys, members), window_s)]
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            results = list(pool.map(lambda j: self._safe(j[1].promql, at_s), jobs))
        if all(isinstance(r, OSError) for r in results):
            raise SourceUnavailable(f"{self.url}: {results[0]}")
        by_field: dict[tuple[tuple[str, ...], str], list[dict] | None] = {}
        for (keys, q), r in zip(jobs, results):
            if isinstance(r, Exception):
                self.last_errors.append(type(r).__name__)
                self.last_causes.append(str(r))
                by_field[(keys, q.field)] = None
            else:
                by_field[(keys, q.field)] = r
        out = {}
        for keys, members in groups.items():
            index = {tuple(m.matchers[k] for k in keys): m.key for m in members}
            rows = {f: _rows(by_field[(keys, f)], keys, index)
                    for f in {q.field for q in queries_for(keys, "", window_s)}}
            for m in members:
                snap = _snapshot(m.key, rows, now_s, window_s, at_s, self.staleness_s)
                out[m.key] = self._with_llm(snap, m.key, rows)
        return out

    def _with_llm(self, snap: Snapshot, key: str, rows: dict) -> Snapshot:
        """``snap`` with the LLM fields; the group named missing (and empty when the query
        answered without this target's series) only for a target seen as an LLM one."""
        values = _llm_values(rows, key)
        if llm.is_llm(values):
            self._llm_targets.add(key)
        if key not in self._llm_targets:
            return snap
        missing, empty, stale = snap.missing, snap.empty, snap.stale
        if rows["llm"] is None or llm.incomplete(values):
            missing = missing | {FIELD_LLM}
            if rows["llm"] is not None and key not in rows["llm"]:
                empty = empty | {FIELD_LLM}
        elif snap.stale:
            stale = stale | {FIELD_LLM}
        return snap.with_(**values, missing=missing, empty=empty, stale=stale)

    def _safe(self, promql: str, at_s: float) -> list[dict] | Exception:
        try:
            return self._query(promql, at_s)
        except (OSError, ValueError) as exc:
            return exc


def _rows(result: list[dict] | None, keys: tuple[str, ...],
          index: dict[tuple[str, ...], str]) -> dict[str, list[tuple[dict, float]]] | None:
    """Target key -> [(labels, value)] for one query; None when the query failed."""
    if result is None:
        return None
    out: dict[str, list[tuple[dict, float]]] = {}
    for item in result:
        labels = item["metric"]
        target = index.get(tuple(labels.get(k, "") for k in keys))
        if target is not None:
            out.setdefault(target, []).append((labels, float(item["value"][1])))
    return out


def _one(rows: dict | None, key: str) -> float | None:
    if rows is None or key not in rows:
        return None
    v = rows[key][0][1]
    return v if math.isfinite(v) else None


def _llm_values(rows: dict, key: str) -> dict[str, object]:
    """The Snapshot's LLM fields of target ``key`` from the two LLM queries' rows."""
    scalars: dict[str, float] = {}
    for labels, v in (rows["llm"] or {}).get(key, []):
        scalars.setdefault(labels.get(FIELD_LABEL, ""), v)
    values: dict[str, object] = {f: llm.finite(scalars.get(f))
                                 for f in (*llm.SUMMED, *llm.MEAN, *llm.RATES)}
    values[llm.PREFIX_FIELD] = llm.finite(scalars.get(llm.PREFIX_FIELD))
    buckets: dict[str, dict[float, float]] = {}
    for labels, v in (rows["llm_latency"] or {}).get(key, []):
        if "le" in labels:
            buckets.setdefault(labels.get(FIELD_LABEL, ""), {})[float(labels["le"])] = v
    for f in llm.HISTOGRAMS:
        values[f] = llm.histogram(buckets.get(f, {}))
    return values


def _histogram(rows: dict | None, key: str) -> LatencyHistogram | None:
    if rows is None or key not in rows:
        return None
    cumulative = sorted((float(lab["le"]), v) for lab, v in rows[key] if "le" in lab)
    if not cumulative or any(not math.isfinite(v) for _, v in cumulative):
        return None
    bounds = tuple(le for le, _ in cumulative if math.isfinite(le))
    cum = [max(0.0, v) for _, v in cumulative]
    if len(cum) == len(bounds):          # no +Inf bucket came back: nothing above the last
        cum.append(cum[-1] if cum else 0.0)
    counts, prev = [], 0.0
    for c in cum:
        counts.append(int(round(max(0.0, c - prev))))
        prev = max(prev, c)
    return LatencyHistogram(bounds_s=bounds, counts=tuple(counts))


def _snapshot(key: str, rows: dict, now_s: float, window_s: float, at_s: float,
              staleness_s: float) -> Snapshot:
    outcomes = rows["outcomes"]
    arrival = completion = shed = timed_out = None
    if outcomes is not None and key in outcomes:
        values = {lab.get("outcome", ""): v for lab, v in outcomes[key]}
        if all(math.isfinite(v) for v in values.values()):
            arrival = sum(values.values())
            completion, shed = values.get("ok", 0.0), values.get("shed", 0.0)
            timed_out = values.get("timeout", 0.0)
    queue, in_flight = _one(rows["queue"], key), _one(rows["in_flight"], key)
    latency = _histogram(rows["latency"], key)
    replicas = _one(rows["replicas"], key)
    samples, size_total, count_total = [], 0.0, 0.0
    sizes, counts, times = (rows[f] or {} for f in ("batch_size_sum", "batch_count",
                                                     "batch_time_sum"))
    per_pod = {lab.get("pod", ""): v for lab, v in counts.get(key, [])}
    size_pod = {lab.get("pod", ""): v for lab, v in sizes.get(key, [])}
    time_pod = {lab.get("pod", ""): v for lab, v in times.get(key, [])}
    for pod, c in sorted(per_pod.items()):
        if c > 0 and math.isfinite(c) and pod in size_pod and pod in time_pod:
            samples.append((size_pod[pod] / c, time_pod[pod] / c))
            size_total += size_pod[pod]
            count_total += c
    present = {FIELD_ARRIVAL_RATE: arrival, FIELD_QUEUE_DEPTH: queue,
               FIELD_IN_FLIGHT: in_flight, FIELD_LATENCY: latency, FIELD_REPLICAS: replicas}
    missing = frozenset(f for f in EXPECTED if present[f] is None)
    empty = frozenset(f for f in missing
                      if rows[QUERY_OF[f]] is not None and key not in rows[QUERY_OF[f]])
    gpu_memory, gpu_busy = _one(rows["gpu_memory"], key), _one(rows["gpu_busy"], key)
    newest = _one(rows["newest"], key)
    stale = frozenset()
    # Old samples, or rates still computed from a window whose gauges already vanished
    # (the target went down and Prometheus wrote staleness markers): both are stale data.
    vanished = newest is None and rows["newest"] is not None and arrival is not None
    if vanished or (newest is not None and at_s - newest > staleness_s):
        stale = frozenset(f for f in EXPECTED if f not in missing)
    return Snapshot(
        time_s=now_s, window_s=window_s, arrival_rate_rps=arrival, completion_rate_rps=completion,
        queue_depth=queue, in_flight=in_flight, latency=latency, batch_samples=tuple(samples),
        mean_batch_size=size_total / count_total if count_total > 0 else None,
        ready_replicas=int(replicas) if replicas is not None else None, shed_rps=shed,
        gpu_memory_used_ratio=gpu_memory, gpu_busy_ratio=gpu_busy,
        timed_out_rps=timed_out, missing=missing, stale=stale, empty=empty)
