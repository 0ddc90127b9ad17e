"""Knative Pod Autoscaler (KPA): stable and panic windows on per-pod concurrency.

Follows knative.dev/serving pkg/autoscaler/scaling/autoscaler.go with the shipped defaults:
2 s tick, stable window 60 s, panic window 10 % of it (6 s), target utilisation 70 %, panic
threshold 200 %, max scale-up rate 1000, max scale-down rate 2, scale-down-delay 0 s,
target-burst-capacity 211. Panic starts when the panic want is at least 200 % of the ready
pods, holds the highest count, and ends once strictly more than a stable window has passed
since the last tick over the threshold; a new autoscaler with more than one ready pod starts
in panic. The per-pod total is resources/target.go's (containerConcurrency, 100 when it is 0,
a target annotation capped by a non-zero containerConcurrency); the target is that total
times the utilisation, at least 0.01.

The data path: the observed concurrency is the revision's, as the metric collector adds it up
(metrics/collector.go): the activator reports every request it holds, buffered in its
throttler or proxied to a pod (handler/concurrency_reporter.go), and each queue-proxy its own
minus the proxied ones, so the sum is every request in the revision, waiting or in a pod.
The simulator's fleet is that data path: its router queue is the activator's buffer (it
holds what no ready pod has room for, containerConcurrency = the replicas' concurrency limit
per ready pod, as the throttler's capacity, net/throttler.go), and the snapshot's
``queue_depth + in_flight`` is every request in the system; while replicas start, what waits
for them is counted. Each tick also computes the excess burst capacity (ready pods x total -
TBC - panic concurrency, floored) and so whether the activator is in the path (kpa.go: the
SKS serves directly only when the want is above 0 and EBC >= 0), both in the details.

Not modelled: serve mode's own routing (with EBC >= 0 the requests go straight to the pods
through kube-proxy and queue in each queue-proxy; the fleet keeps its one router queue, which
differs only when a pod is full, and EBC >= 0 means TBC (211) slots are free); several
activators and their split of the capacity (one is assumed); the activator's lb policies
(the fleet routes least-outstanding); the revision timeout (300 s: the scenario's queue
timeout applies instead); the activator's immediate poke on a revision's first request (the
next 2 s tick sees it); the KPA reconciler's scale-to-zero grace period (30 s) and pod
retention period; activation-scale (1) and initial-scale; the RPS metric; the metric
collector's 1 s buckets and pod sampling (the windows average the snapshots); an unreachable
revision (max scale-down unlimited).

What remains on the demo trace (issue 14) is Knative's own rule: the target, 32 x 0.7 = 22.4
requests per pod, is above what a pod holds while it keeps up (about 1 to 8 here, each batch
of 8 taking 350 ms), so with the load served the stable want is a few pods; they cannot serve
it, the buffered requests push the panic want to the maximum, the 60 s cold start and the
60 s panic hold follow, then the scale-down halves the count every tick: a two-minute cycle.
The signal is not what is missing (tests/sim/test_kpa_data_path.py checks it against each
request's stay); a target near what a pod holds at the SLO (``--sweep``) keeps the load
served, and panic mode still answers the trace's bursts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from pydantic import Field, field_validator

from trimtab.controllers.core.baselines.window import Sample, add_sample, window_mean
from trimtab.controllers.core.binding import PolicyConfig
from trimtab.controllers.core.guards import clamp, hold_on_unreadable
from trimtab.controllers.core.types import (
    FIELD_IN_FLIGHT, REASON_SCALE_DOWN, REASON_SCALE_UP, REASON_STEADY, Decision, Snapshot,
)

TICK_S = 2.0
REASON_PANIC = "kpa_panic"                 # in panic: max(stable, panic), never decreasing
REASON_NO_DATA = "kpa_no_data"
REASON_SCALE_DOWN_DELAY = "kpa_scale_down_delay"   # held by the scale-down-delay window
CC_TARGET_DEFAULT = 100.0     # container-concurrency-target-default, for containerConcurrency 0
TARGET_MIN = 0.01             # autoscaling.TargetMin
TBC_UNLIMITED = -1.0          # target-burst-capacity -1: the activator always in the path


class KpaConfig(PolicyConfig):
    # Soft target per pod before utilisation; None = containerConcurrency, or 100 if that is 0.
    target: float | None = Field(None, gt=0)
    container_concurrency: int = Field(0, ge=0)
    target_utilization: float = Field(0.7, gt=0, le=1)
    stable_window_s: float = Field(60.0, ge=6, le=3600)
    panic_window_pct: float = Field(10.0, ge=1, le=100)
    panic_threshold_pct: float = Field(200.0, gt=100)
    max_scale_up_rate: float = Field(1000.0, gt=1)
    max_scale_down_rate: float = Field(2.0, gt=1)
    # scale-down-delay (config-autoscaler, default 0s, at most 1h): the decision is the
    # highest desired count of the last ``scale_down_delay_s``.
    scale_down_delay_s: float = Field(0.0, ge=0, le=3600)
    # target-burst-capacity (config-autoscaler, default 211): requests of headroom the ready
    # pods must have beyond the panic concurrency for the activator to leave the data path;
    # 0: it leaves once a pod is ready; -1: it never leaves.
    target_burst_capacity: float = Field(211.0)

    @field_validator("target_burst_capacity")
    @classmethod
    def _tbc(cls, v: float) -> float:
        if not (v >= 0 or v == TBC_UNLIMITED):
            raise ValueError("must be either non-negative or -1 (for unlimited)")
        return v

    def total_value(self) -> float:
        """The most a pod may hold (resources/target.go ResolveMetricTarget, concurrency).

        E.g. containerConcurrency 32 and no target: 32; containerConcurrency 0: 100; target
        40 with containerConcurrency 32: 32 (the pod cannot hold more); target 40 with 0: 40.
        """
        cc = float(self.container_concurrency)
        if self.target is not None:
            return min(self.target, cc) if cc > 0 else self.target
        return cc or CC_TARGET_DEFAULT

    def target_per_pod(self) -> float:
        return max(TARGET_MIN, self.total_value() * self.target_utilization)


@dataclass(frozen=True)
class KpaState:
    samples: tuple[Sample, ...] = ()
    panic_since_s: float | None = None     # time of the last tick over the panic threshold
    max_panic_pods: int = 0
    started: bool = False
    recent_wants: tuple[tuple[float, int], ...] = ()   # (time, desired) for scale-down-delay


def initial_state(config: KpaConfig) -> KpaState:
    return KpaState()


def observed_concurrency(snapshot: Snapshot) -> float:
    """The revision's concurrency as the collector sums it: the activator's (buffered and
    proxied) plus the pods' own (minus the proxied): every request waiting or in a pod."""
    return float(snapshot.in_flight or 0.0) + float(snapshot.queue_depth or 0.0)


def excess_burst_capacity(ready: int, panic: float, config: KpaConfig) -> int:
    """autoscaler.go: floor(ready pods x total - TBC - panic concurrency); 0 with TBC 0,
    -1 with TBC -1. ``ready`` is the count read, 0 included (not the max(1, ready) the
    rates use).

    Example (autoscaler_test.go AutoscalerStableModeNoChange): total 10 / 0.75, TBC 100,
    panic 50, 1 pod: floor(13.33 - 100 - 50) = -137: the activator stays in the path.
    """
    tbc = config.target_burst_capacity
    if tbc == 0:
        return 0
    if tbc < 0:
        return -1
    return math.floor(ready * config.total_value() - tbc - panic)


def activator_in_path(want: int, ebc: int) -> bool:
    """kpa.go: the SKS serves from the pods directly only when the revision is wanted above
    zero and has excess burst capacity (EBC >= 0); otherwise the activator proxies."""
    return not (want > 0 and ebc >= 0)


def begin(state: KpaState, ready: int, now_s: float) -> KpaState:
    """A new autoscaler with more than one ready pod starts in panic holding that count.

    autoscaler.go newAutoscaler reads ReadyCount, so lost history cannot cause a scale-down
    (autoscaler_test.go TestStartInPanicMode: 0 or 1 pod no panic, 2 pods panic at 2).
    """
    if state.started:
        return state
    if ready > 1:
        return replace(state, panic_since_s=now_s, max_panic_pods=ready, started=True)
    return replace(state, started=True)


def scale(stable: float, panic: float, ready: int, current: int, state: KpaState,
          now_s: float, config: KpaConfig) -> tuple[int, str, KpaState]:
    """autoscaler.go Scale from the stable and panic concurrency (before the bounds).

    Example: target 10 per pod, 1 ready pod, stable 50 and panic 100: the panic want
    ceil(100 / 10) = 10 is >= 2x of 1 pod, so panic starts and the count is max(5, 10) = 10.
    """
    panic_since_s, max_panic = state.panic_since_s, state.max_panic_pods
    ready_pods = max(1, ready)
    max_up = math.ceil(config.max_scale_up_rate * ready_pods)
    max_down = math.floor(ready_pods / config.max_scale_down_rate)
    target = config.target_per_pod()
    dspc = math.ceil(stable / target - 1e-9)
    dppc = math.ceil(panic / target - 1e-9)
    stable_want = int(min(max(dspc, max_down), max_up))
    panic_want = int(min(max(dppc, max_down), max_up))
    over = dppc / ready_pods >= config.panic_threshold_pct / 100
    if over:
        panic_since_s = now_s
    elif panic_since_s is not None and now_s - panic_since_s > config.stable_window_s:
        # Strictly more than a stable window (autoscaler.go: panicTime.Add(StableWindow)
        # .Before(now)), so one tick later than ">=" would.
        panic_since_s, max_panic = None, 0
    if panic_since_s is not None:
        want = max(stable_want, panic_want, max_panic)
        max_panic = want
        reason = REASON_PANIC
    else:
        want = stable_want
        reason = (REASON_SCALE_UP if want > current
                  else REASON_SCALE_DOWN if want < current else REASON_STEADY)
    want, recent, delayed = delay_scale_down(want, state.recent_wants, now_s,
                                             config.scale_down_delay_s)
    if delayed:
        reason = REASON_SCALE_DOWN_DELAY
    return want, reason, replace(state, panic_since_s=panic_since_s, max_panic_pods=max_panic,
                                 recent_wants=recent)


def decide(snapshot: Snapshot, config: KpaConfig, state: KpaState, now_s: float
           ) -> tuple[Decision, KpaState]:
    # "No series" (Snapshot.empty) holds like a failed read: Knative's autoscaler.go returns
    # an invalid result on metrics.ErrNoData ("No data to scale on yet").
    hold = hold_on_unreadable(snapshot, [FIELD_IN_FLIGHT])
    if hold is not None:
        return hold, state
    b = config.bounds
    ready = snapshot.ready_replicas or 0
    state = begin(state, ready, now_s)
    samples = add_sample(state.samples, now_s, snapshot.window_s, observed_concurrency(snapshot),
                         keep_s=config.stable_window_s)
    state = replace(state, samples=samples)
    stable = window_mean(samples, now_s, config.stable_window_s)
    panic = window_mean(samples, now_s, config.stable_window_s * config.panic_window_pct / 100)
    if stable is None or panic is None:
        return Decision(replicas=snapshot.current_replicas, reason=REASON_NO_DATA,
                        valid=False), state
    want, reason, state = scale(stable, panic, ready, snapshot.current_replicas, state, now_s,
                                config)
    replicas, why = clamp(want, b.min_replicas, b.max_replicas)
    ebc = excess_burst_capacity(ready, panic, config)
    details = {"stable_concurrency": stable, "panic_concurrency": panic,
               "excess_burst_capacity": float(ebc),
               "activator_in_path": float(activator_in_path(replicas, ebc))}
    return Decision(replicas=replicas, reason=why or reason, details=details), state


def delay_scale_down(want: int, recent: tuple[tuple[float, int], ...], now_s: float,
                     delay_s: float) -> tuple[int, tuple[tuple[float, int], ...], bool]:
    """scale-down-delay: the highest desired count over the last ``delay_s`` seconds.

    Example (autoscaler_test.go TestAutoscalerScaleDownDelay): delay 300 s, 4 wanted at
    t=2 and 0 since: 4 at t=300 (2 > 300 - 300), 0 at t=302. A zero delay keeps no window.
    """
    if delay_s <= 0:
        return want, (), False
    kept = tuple(r for r in recent if r[0] > now_s - delay_s) + ((now_s, want),)
    top = max(n for _, n in kept)
    return top, kept, top > want
