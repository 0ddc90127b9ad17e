"""Knative's data path in the replay: what waits for starting pods is the KPA's concurrency.

In Knative the activator buffers requests no ready pod has room for (net/throttler.go: its
capacity is containerConcurrency per ready pod) and reports every request it holds
(handler/concurrency_reporter.go); the collector adds the pods' own, minus those proxied
(metrics/collector.go), so the revision's concurrency is every request in it. The fleet's
router queue is that buffer; these tests hold the SimSource's fields to it (issue 14).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from trimtab.controllers.core.baselines import kpa
from trimtab.controllers.core.binding import BoundPolicy
from trimtab.controllers.core.registry import make_policy
from trimtab.sim.data import scenario_path
from trimtab.sim.engine import Engine
from trimtab.sim.fleet.model import Fleet, FleetConfig
from trimtab.sim.fleet.service import AffineService
from trimtab.sim.replay import simulate
from trimtab.sim.scenario import load_scenario
from trimtab.sim.snapshot import build_snapshot
from trimtab.sim.source import IDEAL, SimSourceConfig, view_snapshot
from trimtab.sim.traces import load_trace
from tests.controllers.builders import bounds
from tests.sim.builders import BOUNDS_S, piece

CC = 10          # containerConcurrency = the replicas' concurrency limit
DEMO_S = 600.0   # the demo trace's first ten minutes: warm-up, then the first two swings


def _fleet(arrival_s: list[float], ready: int, batch_s: float, cold_start_s: float) -> Fleet:
    svc = AffineService(batch_s * 1000.0, 0.0, np.random.default_rng(0), dist="deterministic")
    cfg = FleetConfig(service=svc, cold_start=lambda: cold_start_s, initial_replicas=ready,
                      max_batch=CC, concurrency_limit=CC)
    return Fleet(Engine(seed=0), cfg, np.asarray(arrival_s, dtype=float))


def _snapshot(fleet: Fleet):
    return build_snapshot(fleet.take_window(), bounds_s=(1.0,), concurrency_limit=CC,
                          max_batch_size=CC, batch_timeout_ms=0.0, memory=None)


def test_buffered_requests_are_counted_and_pods_get_cc_each():
    # 2 ready pods, 3 starting (3 s), 50 requests at t=0, each batch 5 s: the pods hold
    # cc x 2 = 20 (throttler_test.go TestThrottlerUpdateCapacity "2 backends ... cc: 10":
    # capacity 20), the other 30 wait in the activator's buffer.
    fleet = _fleet([0.0] * 50, ready=2, batch_s=5.0, cold_start_s=3.0)
    fleet.set_desired(5)
    fleet.eng.run(until_s=2.0)
    s = _snapshot(fleet)
    assert (s.in_flight, s.queue_depth) == pytest.approx((20.0, 30.0))
    pol = make_policy("kpa", bounds(concurrency_limit=CC, max_replicas=100), 15.0)
    d, _ = pol.decide(s, pol.initial_state(), 2.0)
    # All 50 are the revision's concurrency: ceil(50 / 7) = 8 pods, panic (8 >= 2 x 2);
    # counting only what the pods hold it would be ceil(20 / 7) = 3.
    assert d.replicas == 8 and d.reason == kpa.REASON_PANIC
    assert d.details["panic_concurrency"] == pytest.approx(50.0)
    # EBC = 2 x 10 - 211 - 50 < 0: the activator stays in the data path.
    assert d.details["excess_burst_capacity"] == 2 * CC - 211 - 50
    assert d.details["activator_in_path"] == 1.0
    # At 3 s the three are ready: capacity cc x 5 = 50, the buffer empties into them.
    fleet.eng.run(until_s=4.0)
    s = _snapshot(fleet)
    assert fleet.queue_depth == 0 and fleet.in_system == 50
    assert (s.in_flight, s.queue_depth) == pytest.approx((35.0, 15.0))   # 20 then 50 held


@pytest.mark.parametrize("cfg", [IDEAL, SimSourceConfig(gate_per_replica=16),
                                 SimSourceConfig(counted_at_completion=True, gate_per_replica=4)],
                         ids=["ideal", "live-gate-16", "live-gate-4"])
def test_every_source_view_keeps_the_buffered_requests(cfg):
    # 2 ready pods, 8 starting, 300 waiting and 64 in the pods over the window. The live
    # demo's view splits them at the sidecar's gate (per replica x desired), not at the
    # pods; the KPA adds both, so it sees the 364 in every view.
    pieces = [piece(0.0, 2.0, queue=300.0, held=64.0, ready=2, starting=8)]
    s = view_snapshot(cfg, pieces, 2.0, 2.0, latency_bounds_s=BOUNDS_S, concurrency_limit=32,
                      max_batch_size=8, batch_timeout_ms=10.0)
    assert kpa.observed_concurrency(s) == pytest.approx(364.0)


def _recording(log: list):
    def decide(snapshot, config, state, now_s):
        decision, state = kpa.decide(snapshot, config, state, now_s)
        log.append((now_s, snapshot, decision))
        return decision, state
    return decide


def _in_system_mean(arrival_s: np.ndarray, finish_s: np.ndarray, t0_s: float,
                    t1_s: float) -> float:
    """The time-mean of requests in the system over [t0, t1], from each request's stay."""
    fin = np.where(np.isnan(finish_s), np.inf, finish_s)
    stay = np.clip(np.minimum(fin, t1_s) - np.maximum(arrival_s, t0_s), 0.0, None)
    return float(stay.sum()) / (t1_s - t0_s)


@pytest.fixture(scope="module")
def demo_run():
    sc = load_scenario(scenario_path("default"))
    trace = load_trace(sc.trace, sc.base_dir)
    keep = trace.arrival_s < DEMO_S
    cut = {k: v[keep] for k in ("prompt_tokens", "output_tokens")
           if (v := getattr(trace, k)) is not None}
    trace = dataclasses.replace(trace, arrival_s=trace.arrival_s[keep], span_s=DEMO_S, **cut)
    base = make_policy("kpa", sc.bounds(trace), sc.controller.interval_s)
    log: list = []
    pol = BoundPolicy(name="kpa", config=base.config, decide_fn=_recording(log),
                      initial_state_fn=kpa.initial_state, interval_s=base.interval_s)
    result = simulate(sc, pol, trace, record_requests=True)
    return sc, base.config, log, result


def test_demo_kpa_counts_what_waits_while_replicas_start(demo_run):
    _, config, log, result = demo_run
    arr, fin = result.requests["arrival_s"], result.requests["finish_s"]
    cc = config.container_concurrency
    cold = [(t, s, d) for t, s, d in log
            if (s.starting_replicas or 0) >= 10 and (s.queue_depth or 0) > 0]
    assert len(cold) >= 10                      # the swings' cold starts are in the window
    for t, s, d in cold:
        seen = kpa.observed_concurrency(s)
        # The KPA's concurrency is every request in the revision, the buffered ones included
        # (checked against each request's own stay, not the fleet's counters) ...
        assert seen == pytest.approx(_in_system_mean(arr, fin, t - s.window_s, t), rel=1e-6)
        # ... which is more than the ready pods can hold: not "near zero".
        assert seen > cc * s.ready_replicas
        # So it never scales down while pods start, and the activator is in the path.
        assert d.replicas >= s.desired_replicas
        assert d.details["activator_in_path"] == 1.0 and d.details["excess_burst_capacity"] < 0


def test_demo_kpa_swing_is_knatives_concurrency_rule(demo_run):
    # What remains: out of panic the stable want is ceil(stable / 22.4), and with the load
    # served the revision holds about one request per pod; so the want is a few pods,
    # fewer than the load needs at full batches of 8 (350 ms each), and the next cycle
    # begins. Each large scale-down is that rule, not a missing signal.
    sc, config, log, _ = demo_run
    svc = sc.service
    full_batch_s = (svc.base_ms + svc.per_item_ms * svc.max_batch) / 1000.0
    target = config.target_per_pod()
    drops = [(t, s, d) for t, s, d in log
             if t > 300 and d.reason == "scale_down" and d.replicas <= s.desired_replicas / 2]
    assert drops
    for t, s, d in drops:
        stable_want = math.ceil(d.details["stable_concurrency"] / target - 1e-9)
        rate_rps = np.mean([u.arrival_rate_rps for t_s, u, _ in log
                            if t - config.stable_window_s < t_s <= t])
        needed_at_full_batches = rate_rps * full_batch_s / svc.max_batch
        assert stable_want < needed_at_full_batches
        assert d.replicas == max(stable_want, math.floor(s.ready_replicas / 2))
