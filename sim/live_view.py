"""A policy wrapper for the fidelity replay: the policy sees what the live controller saw.

The simulator hands a policy exact figures of the last interval; the live controller reads
Prometheus, and that differs in ways that change when it scales:

- Its "arrival rate" is ``rate(trimtab_requests_total)``, counted when a request finishes
  (the completion rate plus sheds and timeouts), over a 5 s window read about a scrape late:
  the mean of the last ``lag`` simulator windows stands in for it.
- Its replica count is Ray's running plus starting replicas: the live sources report no
  desired count (the simulator's snapshot does, and a policy prefers it).
- Its queue and in-flight figures are the sidecar's: the sidecar gate admits
  ``per-replica limit x desired replicas`` (``GateActuator``) and everything admitted counts
  as in flight, also what waits in Ray's proxy; only the rest is the sidecar's queue.
- Its batch samples are the replicas' batch metrics, which time the batch alone (the fitted
  batch line), not the effective line the simulator runs (see ``trimtab.up.fit``).
- The concurrency limit it reads back is its own; the fleet runs at the fitted effective
  concurrency (what Ray's router lets a saturated replica hold), never above the policy's.
- What the live actuators do not apply (``UNAPPLIED``: the Ray Serve actuator and the sidecar
  gate set replicas, the concurrency limit and the batch settings, not the admission
  timeout) is not applied to the simulated fleet either.

Pure: the history of windows travels in the state, as every policy's state does.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from trimtab.controllers.core.types import Decision, LatencyHistogram, Policy, Snapshot


UNAPPLIED = ("queue_timeout_s",)    # Decision fields the live loop's actuators leave alone


@dataclass(frozen=True)
class LiveView:
    """How the live controller's view differs from the simulator's exact windows."""

    lag: int = 1                               # simulator windows averaged
    gate_per_replica: int | None = None        # sidecar admission per desired replica
    concurrency: int | None = None             # effective per-replica concurrency of the fleet
    measured_line_ms: tuple[float, float] | None = None   # batch metrics: (base, per item)
    effective_line_ms: tuple[float, float] | None = None  # what the simulator runs
    unapplied: tuple[str, ...] = UNAPPLIED


@dataclass(frozen=True)
class ViewState:
    inner: Any
    history: tuple[Snapshot, ...] = ()
    limit: int | None = None                   # the policy's own last concurrency limit


def _sum_hist(hists: list[LatencyHistogram]) -> LatencyHistogram | None:
    hists = [h for h in hists if h is not None]
    if not hists:
        return None
    bounds = hists[-1].bounds_s
    same = [h for h in hists if h.bounds_s == bounds]
    return LatencyHistogram(bounds, tuple(sum(c) for c in zip(*(h.counts for h in same))))


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def measured_batch_s(view: LiveView, size: float, sim_s: float) -> float:
    """A simulated batch time as the replica's batch metric would have timed it.

    E.g. measured line 40 + 60 b, effective 9.5 + 90.5 b: a simulated batch of 2 taking
    0.19 s shows as 0.19 * 160 / 190.5 = 0.16 s.
    """
    if view.measured_line_ms is None or view.effective_line_ms is None:
        return sim_s
    mb, mp = view.measured_line_ms
    eb, ep = view.effective_line_ms
    eff = eb + ep * size
    return sim_s * (mb + mp * size) / eff if eff > 0 else sim_s


def live_snapshot(view: LiveView, history: tuple[Snapshot, ...], limit: int | None
                  ) -> Snapshot:
    """The snapshot the live controller would have read, from the last simulator windows."""
    now = history[-1]
    span = history[-view.lag:]
    finished = [(s.completion_rate_rps or 0.0) + (s.shed_rps or 0.0) + (s.timed_out_rps or 0.0)
                for s in span]
    queue = _mean([s.queue_depth for s in span]) or 0.0
    held = _mean([s.in_flight for s in span]) or 0.0
    in_flight, waiting = held, queue
    if view.gate_per_replica is not None:
        per_replica = max(limit or view.gate_per_replica, now.max_batch_size or 1)
        gate = per_replica * max(1, now.current_replicas)
        total = queue + held
        in_flight = min(total, float(gate))
        waiting = total - in_flight
    samples = tuple((b, measured_batch_s(view, b, t)) for s in span for b, t in s.batch_samples)
    sizes = [s.mean_batch_size for s in span]
    return replace(
        now, window_s=sum(s.window_s for s in span), arrival_rate_rps=sum(finished) / len(span),
        completion_rate_rps=_mean([s.completion_rate_rps for s in span]),
        shed_rps=_mean([s.shed_rps for s in span]),
        timed_out_rps=_mean([s.timed_out_rps for s in span]),
        queue_depth=waiting, in_flight=in_flight, latency=_sum_hist([s.latency for s in span]),
        desired_replicas=None,
        batch_samples=samples, mean_batch_size=_mean(sizes),
        concurrency_limit=limit if limit is not None else (
            view.gate_per_replica if view.concurrency is not None else now.concurrency_limit))


@dataclass
class LiveViewPolicy:
    """``inner`` deciding on the live controller's view; its decisions go to the simulated
    fleet with the concurrency limit capped at the fitted effective concurrency."""

    inner: Policy
    view: LiveView
    extra_params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def params(self) -> Mapping[str, Any]:
        return {**self.inner.params, **self.extra_params}

    @property
    def interval_s(self) -> float:
        return self.inner.interval_s

    def initial_state(self) -> ViewState:
        return ViewState(self.inner.initial_state())

    def decide(self, snapshot: Snapshot, state: ViewState, now_s: float
               ) -> tuple[Decision, ViewState]:
        history = (state.history + (snapshot,))[-self.view.lag:]
        seen = live_snapshot(self.view, history, state.limit)
        decision, inner = self.inner.decide(seen, state.inner, now_s)
        limit = decision.concurrency_limit if decision.concurrency_limit is not None \
            else state.limit
        if self.view.concurrency is not None:
            cap = self.view.concurrency if limit is None else min(limit, self.view.concurrency)
            decision = decision.with_(concurrency_limit=cap)
        dropped = {f: None for f in self.view.unapplied if getattr(decision, f, None) is not None}
        if dropped:
            decision = decision.with_(**dropped)
        return decision, ViewState(inner, history, limit)
