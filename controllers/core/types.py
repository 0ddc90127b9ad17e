"""Types shared by production and the simulator: metrics snapshot, decision, policy protocol."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, Mapping, Protocol

from trimtab.controllers.core.defaults import MAX_REPLICAS, SLO_TARGET

# Reason codes. Every decision carries one; it is exported as a label and logged.
# Policies may add their own (lower_snake_case); these are the shared ones.
REASON_STEADY = "steady"                  # nothing to change
REASON_SCALE_UP = "scale_up"
REASON_SCALE_DOWN = "scale_down"
REASON_WITHIN_TOLERANCE = "within_tolerance"
REASON_SCALE_UP_LIMITED = "scale_up_limited"
REASON_STABILIZING = "stabilizing"        # a scale-down held by a stabilisation window
REASON_AT_MIN = "at_min_replicas"
REASON_AT_MAX = "at_max_replicas"
REASON_HOLD_MISSING = "hold_missing_metrics"
REASON_HOLD_STALE = "hold_stale_metrics"
REASON_HOLD_WARMUP = "hold_warmup"        # restarted: no scale-down until windows fill
REASON_BURST = "burst"
REASON_STATIC = "static"

class FieldGroup(StrEnum):
    """What a source names in ``Snapshot.missing`` / ``Snapshot.stale``: a group of Snapshot
    attributes read together (one query, one scrape); ``attributes`` says which.

    A member is its value as a string too (``FieldGroup.GPU == "gpu"``), so a set of plain
    names still compares; ``Snapshot`` turns every name into a member and refuses a name
    that is none, so a typo fails where the snapshot is built.
    """

    ARRIVAL_RATE = "arrival_rate_rps"
    QUEUE_DEPTH = "queue_depth"
    IN_FLIGHT = "in_flight"
    LATENCY = "latency"
    BATCH = "batch"
    REPLICAS = "replicas"
    GPU = "gpu"
    LLM = "llm"

    @property
    def attributes(self) -> tuple[str, ...]:
        """The Snapshot attributes this group covers."""
        return _GROUP_ATTRIBUTES[self]

    @classmethod
    def of(cls, attribute: str) -> "FieldGroup":
        """The group covering Snapshot ``attribute``; ValueError naming it if none does."""
        for group, names in _GROUP_ATTRIBUTES.items():
            if attribute in names:
                return group
        raise ValueError(f"{attribute!r} is no Snapshot attribute a field group covers; "
                         f"covered: {sorted(a for n in _GROUP_ATTRIBUTES.values() for a in n)}")

    @classmethod
    def parse(cls, name: str) -> "FieldGroup":
        """``name`` as a member; ValueError naming it and the known groups if it is none."""
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"field group {name!r} is unknown; known: "
                             f"{sorted(g.value for g in cls)}") from None


_GROUP_ATTRIBUTES: dict[FieldGroup, tuple[str, ...]] = {
    FieldGroup.ARRIVAL_RATE: ("arrival_rate_rps",),
    FieldGroup.QUEUE_DEPTH: ("queue_depth",),
    FieldGroup.IN_FLIGHT: ("in_flight",),
    FieldGroup.LATENCY: ("latency",),
    FieldGroup.BATCH: ("batch_samples", "mean_batch_size"),
    FieldGroup.REPLICAS: ("ready_replicas", "starting_replicas", "desired_replicas"),
    FieldGroup.GPU: ("gpu_memory_used_ratio", "gpu_busy_ratio"),
    FieldGroup.LLM: ("engine_running", "engine_waiting", "kv_cache_usage_ratio", "ttft", "tpot",
                     "itl", "prompt_tokens_rps", "generation_tokens_rps", "preemptions_rps",
                     "prefix_cache_hit_ratio"),
}
ALL_FIELD_GROUPS: frozenset[FieldGroup] = frozenset(FieldGroup)

# The names producers import (aliases of the members).
FIELD_ARRIVAL_RATE = FieldGroup.ARRIVAL_RATE
FIELD_QUEUE_DEPTH = FieldGroup.QUEUE_DEPTH
FIELD_IN_FLIGHT = FieldGroup.IN_FLIGHT
FIELD_LATENCY = FieldGroup.LATENCY
FIELD_BATCH = FieldGroup.BATCH
FIELD_REPLICAS = FieldGroup.REPLICAS
FIELD_GPU = FieldGroup.GPU
FIELD_LLM = FieldGroup.LLM


@dataclass(frozen=True)
class LatencyHistogram:
    """Request latency over one window, as Prometheus-style buckets (not cumulative).

    ``counts[i]`` counts requests with latency <= ``bounds_s[i]`` and > ``bounds_s[i-1]``;
    ``counts[-1]`` (one more than ``bounds_s``) counts those above the last bound (+Inf).
    """

    bounds_s: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.bounds_s) + 1:
            raise ValueError(
                f"LatencyHistogram: {len(self.counts)} counts for {len(self.bounds_s)} bounds;"
                " need one count per bound plus one for +Inf")
        if any(b2 <= b1 for b1, b2 in zip(self.bounds_s, self.bounds_s[1:])):
            raise ValueError(f"LatencyHistogram: bounds_s {self.bounds_s} must increase")

    @property
    def total(self) -> int:
        return int(sum(self.counts))

    def count_over(self, threshold_s: float) -> int:
        """Requests in buckets entirely above ``threshold_s`` (exact when it is a bound)."""
        n = 0
        for i, c in enumerate(self.counts):
            lower_s = self.bounds_s[i - 1] if i > 0 else 0.0
            if lower_s >= threshold_s:
                n += c
        return n

    def quantile(self, q: float) -> float:
        """Linear interpolation inside the bucket, like PromQL histogram_quantile.

        Returns NaN for an empty histogram and the last finite bound for the +Inf bucket.
        """
        total = self.total
        if total == 0:
            return math.nan
        rank = q * total
        seen = 0.0
        for i, c in enumerate(self.counts):
            if seen + c >= rank and c > 0:
                if i == len(self.bounds_s):
                    return self.bounds_s[-1] if self.bounds_s else math.inf
                lower_s = self.bounds_s[i - 1] if i > 0 else 0.0
                return lower_s + (self.bounds_s[i] - lower_s) * (rank - seen) / c
            seen += c
        return self.bounds_s[-1] if self.bounds_s else math.inf


@dataclass(frozen=True)
class Snapshot:
    """What the collectors export about one target over the last window, as a controller sees it.

    Rates and depths are averages over the window ``[time_s - window_s, time_s]``; ``None``
    means the value could not be read (its group is then also named in ``missing``).
    ``stale`` names groups whose newest sample is older than the source's staleness limit.
    ``empty`` names the groups of ``missing`` whose query succeeded with no series for this
    target (no pod exports them: scaled to zero, not scraped yet), as opposed to a failed
    query; it is always a subset of ``missing``, so a reader that does not look at it treats
    "no series" as "could not read" (see ``unread``). Only the KEDA baseline reads it
    (KEDA's Prometheus scaler: an empty result is 0 with ignoreNullValues).
    All three hold ``FieldGroup`` members; plain names are turned into members, unknown ones
    refused.

    The ``FieldGroup.LLM`` fields are an LLM engine's (vLLM's series, as the sidecar reads
    them); a target that is no LLM server leaves them None without naming the group missing.
    An LLM server's waiting and running sequences are also counted in ``queue_depth`` and
    ``in_flight`` (the sidecar maps vLLM's num_requests_waiting / num_requests_running onto
    them; a router's or admission proxy's queue adds to ``queue_depth``).
    """

    time_s: float
    window_s: float
    arrival_rate_rps: float | None = None
    completion_rate_rps: float | None = None
    queue_depth: float | None = None          # waiting, router plus replica queues, mean
    in_flight: float | None = None            # held by replicas (queued there or in a batch), mean
    latency: LatencyHistogram | None = None
    # (batch size, batch time s) pairs: single batches (sim) or per-pod window means (live).
    batch_samples: tuple[tuple[float, float], ...] = ()
    mean_batch_size: float | None = None
    ready_replicas: int | None = None
    starting_replicas: int | None = None
    desired_replicas: int | None = None       # the count currently asked of the actuator
    gpu_memory_used_ratio: float | None = None  # max over replicas
    gpu_busy_ratio: float | None = None         # mean over ready replicas
    shed_rps: float | None = None
    timed_out_rps: float | None = None
    # Pod-level settings in force now.
    concurrency_limit: int | None = None
    max_batch_size: int | None = None
    batch_timeout_ms: float | None = None
    # An LLM engine (FieldGroup.LLM), summed over replicas; vLLM's series in the comments.
    engine_running: float | None = None         # vllm:num_requests_running, mean
    engine_waiting: float | None = None         # vllm:num_requests_waiting, mean
    kv_cache_usage_ratio: float | None = None   # vllm:kv_cache_usage_perc: blocks used / all
    ttft: LatencyHistogram | None = None        # vllm:time_to_first_token_seconds
    tpot: LatencyHistogram | None = None        # vllm:request_time_per_output_token_seconds
    itl: LatencyHistogram | None = None         # vllm:inter_token_latency_seconds (per token)
    prompt_tokens_rps: float | None = None      # rate(vllm:prompt_tokens_total)
    generation_tokens_rps: float | None = None  # rate(vllm:generation_tokens_total)
    preemptions_rps: float | None = None        # rate(vllm:num_preemptions_total)
    prefix_cache_hit_ratio: float | None = None  # prefix_cache_hits / prefix_cache_queries
    missing: frozenset[FieldGroup] = frozenset()
    stale: frozenset[FieldGroup] = frozenset()
    empty: frozenset[FieldGroup] = frozenset()

    def __post_init__(self) -> None:
        for name in ("missing", "stale", "empty"):
            groups = getattr(self, name)
            if not all(type(g) is FieldGroup for g in groups):
                try:
                    typed = frozenset(FieldGroup.parse(g) for g in groups)
                except ValueError as exc:
                    raise ValueError(f"Snapshot.{name}: {exc}") from None
                object.__setattr__(self, name, typed)
        if not self.empty <= self.missing:
            raise ValueError(f"Snapshot.empty: {sorted(map(str, self.empty - self.missing))} "
                             "not named in missing (an empty group is a missing one too)")

    @property
    def unread(self) -> frozenset[FieldGroup]:
        """The groups of ``missing`` whose query failed (``missing`` less ``empty``)."""
        return self.missing - self.empty

    @property
    def current_replicas(self) -> int:
        """The count a policy treats as 'now': desired if known, else ready + starting."""
        if self.desired_replicas is not None:
            return self.desired_replicas
        return (self.ready_replicas or 0) + (self.starting_replicas or 0)

    def with_(self, **changes: Any) -> "Snapshot":
        return replace(self, **changes)


_SNAPSHOT_FIELDS = {f.name for f in fields(Snapshot)}
for _group, _names in _GROUP_ATTRIBUTES.items():   # a group naming no attribute fails at import
    if not set(_names) <= _SNAPSHOT_FIELDS:
        raise TypeError(f"FieldGroup.{_group.name} names {sorted(set(_names) - _SNAPSHOT_FIELDS)}"
                        ", which Snapshot does not have")


@dataclass(frozen=True)
class Decision:
    """What a policy wants applied, and why. ``valid`` False means 'apply nothing'."""

    replicas: int
    reason: str
    concurrency_limit: int | None = None   # per replica; None leaves it as it is
    max_batch_size: int | None = None
    batch_timeout_ms: float | None = None
    queue_timeout_s: float | None = None   # longest wait for admission; late ones are shed
    valid: bool = True
    forecast_rps: float | None = None      # the load the decision planned for, if any
    details: Mapping[str, float] = field(default_factory=dict)

    def with_(self, **changes: Any) -> "Decision":
        return replace(self, **changes)


@dataclass(frozen=True)
class FleetBounds:
    """What every policy is told about the fleet it steers (same for baselines and ours)."""

    min_replicas: int = 1
    max_replicas: int = MAX_REPLICAS
    cold_start_s: float = 60.0
    slo_latency_s: float = 0.5
    slo_target: float = SLO_TARGET
    slo_ttft_s: float | None = None        # an LLM fleet's bounds on time to first token
    slo_tpot_s: float | None = None        # and time per output token (None: not bound)
    initial_replicas: int = 1
    concurrency_limit: int | None = None
    max_batch_size: int | None = None
    batch_timeout_ms: float | None = None
    gpu_memory_bytes: float | None = None


class Policy(Protocol):
    """A scaling policy: a pure ``decide`` plus the period at which its real system runs.

    ``decide`` does no I/O and reads no clock: ``now_s`` is a parameter and the state it
    returns is handed back on the next call, so a restarted controller loses nothing it saved.
    """

    name: str
    params: Mapping[str, Any]
    interval_s: float

    def initial_state(self) -> Any: ...

    def decide(self, snapshot: Snapshot, state: Any, now_s: float) -> tuple[Decision, Any]: ...
