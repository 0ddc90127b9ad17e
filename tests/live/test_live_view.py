"""The fidelity replay's policy wrapper: the policy sees what the live controller saw."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from trimtab.controllers.core.types import Decision, LatencyHistogram, Snapshot
from trimtab.sim.live_view import LiveView, LiveViewPolicy, live_snapshot, measured_batch_s

BOUNDS_S = (0.1, 0.5, 1.0)


def snap(t_s: float = 3.0, completion: float = 10.0, shed: float = 0.0, timed_out: float = 0.0,
         arrival: float = 99.0, queue: float = 0.0, held: float = 1.0, desired: int = 1,
         samples: tuple = ((1.0, 0.1),), counts: tuple = (5, 3, 1, 0),
         limit: int | None = 2, max_batch: int = 8) -> Snapshot:
    return Snapshot(time_s=t_s, window_s=3.0, arrival_rate_rps=arrival,
                    completion_rate_rps=completion, queue_depth=queue, in_flight=held,
                    latency=LatencyHistogram(BOUNDS_S, counts), batch_samples=samples,
                    mean_batch_size=1.0, ready_replicas=desired, starting_replicas=0,
                    desired_replicas=desired, shed_rps=shed, timed_out_rps=timed_out,
                    concurrency_limit=limit, max_batch_size=max_batch)


def test_the_rate_is_what_finished_averaged_over_the_lag():
    # Counterfactual: the simulator's own figure would be the true arrival rate, 99.
    seen = live_snapshot(LiveView(lag=2), (snap(completion=6.0, shed=1.0),
                                           snap(completion=10.0, timed_out=1.0)), None)
    assert seen.arrival_rate_rps == pytest.approx(9.0)
    assert seen.window_s == 6.0
    assert seen.latency.counts == (10, 6, 2, 0)


def test_the_replica_count_is_rays_running_plus_starting():
    now = snap(desired=3).with_(ready_replicas=1, starting_replicas=1)
    seen = live_snapshot(LiveView(gate_per_replica=16), (now,), None)
    assert seen.desired_replicas is None and seen.current_replicas == 2
    # The gate still follows the count asked of the actuator: 16 x 3.
    assert live_snapshot(LiveView(gate_per_replica=16), (now.with_(in_flight=60.0),),
                         None).in_flight == 48.0


@pytest.mark.parametrize("queue, held, desired, limit, in_flight, waiting", [
    (10.0, 30.0, 2, None, 32.0, 8.0),     # gate 16 x 2: the sidecar's queue holds the rest
    (0.0, 5.0, 2, None, 5.0, 0.0),        # under the gate: nothing waits in the sidecar
    (3.0, 2.0, 1, 4, 5.0, 0.0),           # gate max(4, batch 8) x 1 = 8
], ids=["over-the-gate", "under-the-gate", "policy-limit"])
def test_queue_and_in_flight_are_the_sidecars(queue, held, desired, limit, in_flight, waiting):
    view = LiveView(gate_per_replica=16, concurrency=2)
    seen = live_snapshot(view, (snap(queue=queue, held=held, desired=desired),), limit)
    assert seen.in_flight == pytest.approx(in_flight)
    assert seen.queue_depth == pytest.approx(waiting)
    # The limit read back is the policy's own (or Ray's starting 16), never the fitted 2.
    assert seen.concurrency_limit == (limit or 16)


def test_batch_times_show_as_the_batch_metrics_time_them():
    view = LiveView(measured_line_ms=(40.0, 60.0), effective_line_ms=(9.5, 90.5))
    assert measured_batch_s(view, 2, 0.1905) == pytest.approx(0.160, abs=1e-4)
    assert measured_batch_s(LiveView(), 2, 0.1905) == 0.1905
    seen = live_snapshot(view, (snap(samples=((2.0, 0.1905),)),), None)
    assert seen.batch_samples[0][1] == pytest.approx(0.160, abs=1e-4)


@dataclass
class Recorder:
    """A policy that records what it saw and asks for a fixed concurrency limit."""

    limit: int | None = 12
    name: str = "recorder"
    params: dict = field(default_factory=dict)
    interval_s: float = 3.0
    seen: list = field(default_factory=list)

    def initial_state(self) -> int:
        return 0

    def decide(self, snapshot, state, now_s):
        self.seen.append(snapshot)
        return Decision(replicas=2, reason="steady", concurrency_limit=self.limit), state + 1


@pytest.mark.parametrize("asked, fleet_gets", [(12, 2), (1, 1), (None, 2)],
                         ids=["capped", "below-the-cap", "none-asked"])
def test_the_fleet_gets_the_fitted_concurrency_and_the_policy_its_own(asked, fleet_gets):
    inner = Recorder(limit=asked)
    pol = LiveViewPolicy(inner, LiveView(lag=2, gate_per_replica=16, concurrency=2))
    state = pol.initial_state()
    d1, state = pol.decide(snap(t_s=3.0), state, 3.0)
    d2, state = pol.decide(snap(t_s=6.0), state, 6.0)
    d3, state = pol.decide(snap(t_s=9.0), state, 9.0)
    assert [d.concurrency_limit for d in (d1, d2, d3)] == [fleet_gets] * 3
    assert state.inner == 3 and len(state.history) == 2        # the history is bounded
    assert inner.seen[1].concurrency_limit == (asked or 16)
    assert inner.seen[2].time_s == 9.0


def test_the_wrapper_is_pure():
    pol = LiveViewPolicy(Recorder(), LiveView(lag=3, gate_per_replica=16, concurrency=2))
    state = pol.initial_state()
    s1 = pol.decide(snap(completion=4.0), state, 3.0)[1]
    a = pol.decide(snap(completion=8.0), s1, 6.0)
    b = pol.decide(snap(completion=8.0), s1, 6.0)
    assert a == b
    assert pol.inner.seen[-1].arrival_rate_rps == pytest.approx(6.0)


def test_without_a_fitted_concurrency_decisions_pass_through():
    pol = LiveViewPolicy(Recorder(limit=12), LiveView())
    d, _ = pol.decide(snap(), pol.initial_state(), 3.0)
    assert d.concurrency_limit == 12
    assert pol.name == "recorder" and pol.interval_s == 3.0


def test_what_the_live_actuators_do_not_apply_is_not_applied():
    from trimtab.sim.live_view import UNAPPLIED

    # The sidecar gate and the Ray Serve actuator never set the admission timeout.
    assert "queue_timeout_s" in UNAPPLIED

    class Timer(Recorder):
        def decide(self, snapshot, state, now_s):
            return Decision(replicas=2, reason="steady", batch_timeout_ms=7.0), state

    pol = LiveViewPolicy(Timer(), LiveView(unapplied=("batch_timeout_ms",)))
    d, _ = pol.decide(snap(), pol.initial_state(), 3.0)
    assert d.batch_timeout_ms is None and d.replicas == 2
    pol = LiveViewPolicy(Timer(), LiveView(unapplied=()))
    d, _ = pol.decide(snap(), pol.initial_state(), 3.0)
    assert d.batch_timeout_ms == 7.0
