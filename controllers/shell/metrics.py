"""The controller's own metrics (trimtab_controller_*), on an injected registry, names from trimtab.collectors.names."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from trimtab.collectors import names as n

HOLD_REASONS = ("missing", "stale", "warmup", "paused", "source_error", "backoff")
LOOP_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)


def _help(name: str) -> str:
    return n.BY_NAME[name].help


def _labels(name: str) -> tuple[str, ...]:
    return n.BY_NAME[name].labels


class ControllerMetrics:
    """Every controller family, registered on ``registry`` so tests read values back privately."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        def gauge(name: str) -> Gauge:
            return Gauge(name, _help(name), _labels(name), registry=r)

        def counter(name: str) -> Counter:
            return Counter(name, _help(name), _labels(name), registry=r)

        self.loop_duration = Histogram(n.CTRL_LOOP_DURATION, _help(n.CTRL_LOOP_DURATION),
                                       buckets=LOOP_BUCKETS_S, registry=r)
        self.decisions = counter(n.CTRL_DECISIONS)
        self.desired_replicas = gauge(n.CTRL_DESIRED_REPLICAS)
        self.applied_replicas = gauge(n.CTRL_APPLIED_REPLICAS)
        self.current_replicas = gauge(n.CTRL_CURRENT_REPLICAS)
        self.max_replicas = gauge(n.CTRL_MAX_REPLICAS)
        self.desired_concurrency = gauge(n.CTRL_DESIRED_CONCURRENCY)
        self.desired_batch = gauge(n.CTRL_DESIRED_BATCH)
        self.desired_batch_timeout = gauge(n.CTRL_DESIRED_BATCH_TIMEOUT)
        self.forecast_rps = gauge(n.CTRL_FORECAST_RPS)
        self.observed_rps = gauge(n.CTRL_OBSERVED_RPS)
        self.forecast_error = gauge(n.CTRL_FORECAST_ERROR)
        self.holding = gauge(n.CTRL_HOLDING)
        self.actuation_errors = counter(n.CTRL_ACTUATION_ERRORS)
        self.source_errors = counter(n.CTRL_SOURCE_ERRORS)
        self.last_success = gauge(n.CTRL_LAST_SUCCESS)
        self.is_leader = gauge(n.CTRL_IS_LEADER)

    def set_holding(self, labels: tuple[str, str, str], reason: str | None) -> None:
        """One-hot over HOLD_REASONS: the held reason is 1, the others 0 (so alerts can clear)."""
        for r in HOLD_REASONS:
            self.holding.labels(*labels, r).set(1.0 if r == reason else 0.0)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Read one sample back (tests, bench): ``name`` as exposed, e.g. ``..._total``."""
        return self.registry.get_sample_value(name, labels or {})
