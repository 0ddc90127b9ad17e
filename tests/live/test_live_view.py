"""The fidelity replay's live view: settings of the simulated source and actuator that make the
policy see what the live controller saw and the fleet get what the live actuators applied.

None of these needs Ray: the live model is built by hand, the fleet is the simulator's."""
from __future__ import annotations

import pytest

from trimtab.controllers.core.types import Decision
from trimtab.controllers.shell.actuators.base import WorkloadRef
from trimtab.sim.actuator import SimActuator, SimActuatorConfig
from trimtab.sim.engine import Engine
from trimtab.sim.replay import build_fleet
from trimtab.sim.source import SimSourceConfig, measured_batch_s, view_snapshot
from trimtab.sim.traces import trace_from_arrays
from tests.sim.builders import BOUNDS_S, piece
from tests.sim.test_replay import scenario

LIVE = SimSourceConfig(rate_window_s=6.0, counted_at_completion=True, gate_per_replica=16)
FLEET = WorkloadRef("SimulatedFleet", "sim", "fleet")


def seen(cfg: SimSourceConfig, pieces, limit: int | None = None, window_s: float = 6.0):
    return view_snapshot(cfg, pieces, pieces[-1].w.t1_s, window_s, latency_bounds_s=BOUNDS_S,
                         concurrency_limit=limit, max_batch_size=8, batch_timeout_ms=5.0)


def test_the_rate_is_what_finished_over_the_lag():
    # Counterfactual: counted on arrival the rate would be the true 99 rps.
    pieces = [piece(0.0, 3.0, arrivals=297, completions=18, shed=3),
              piece(3.0, 6.0, arrivals=297, completions=30, timed_out=3)]
    snap = seen(LIVE, pieces)
    assert snap.arrival_rate_rps == pytest.approx(54 / 6)
    assert snap.window_s == 6.0
    assert snap.latency.total == 48


@pytest.mark.parametrize("queue, held, desired, limit, in_flight, waiting", [
    (10.0, 30.0, 2, None, 32.0, 8.0),     # gate 16 x 2: the sidecar's queue holds the rest
    (0.0, 5.0, 2, None, 5.0, 0.0),        # under the gate: nothing waits in the sidecar
    (3.0, 2.0, 1, 4, 5.0, 0.0),           # gate max(4, batch 8) x 1 = 8
], ids=["over-the-gate", "under-the-gate", "policy-limit"])
def test_queue_and_in_flight_are_the_sidecars(queue, held, desired, limit, in_flight, waiting):
    snap = seen(LIVE, [piece(0.0, 6.0, arrivals=10, queue=queue, held=held, ready=desired)],
                limit=limit)
    assert snap.in_flight == pytest.approx(in_flight)
    assert snap.queue_depth == pytest.approx(waiting)


def test_batch_times_show_as_the_batch_metrics_time_them():
    cfg = SimSourceConfig(measured_line_ms=(40.0, 60.0), effective_line_ms=(9.5, 90.5))
    assert measured_batch_s(cfg, 2, 0.1905) == pytest.approx(0.160, abs=1e-4)
    assert measured_batch_s(SimSourceConfig(), 2, 0.1905) == 0.1905
    snap = seen(cfg, [piece(0.0, 3.0, arrivals=5, batches=((2, 0.1905),))], window_s=3.0)
    assert snap.batch_samples[0][1] == pytest.approx(0.160, abs=1e-4)
    with pytest.raises(ValueError, match="both or neither"):
        SimSourceConfig(measured_line_ms=(40.0, 60.0))


def fleet(concurrency_limit: int | None = 2):
    sc = scenario(replicas={"concurrency_limit": concurrency_limit})
    return build_fleet(sc, trace_from_arrays([0.5, 1.0]), Engine(seed=1)), sc.bounds()


@pytest.mark.parametrize("asked, fleet_gets, reads_back", [
    (12, 2, 12), (1, 1, 1), (None, 2, 16)], ids=["capped", "below-the-cap", "none-asked"])
def test_the_fleet_gets_the_fitted_concurrency_and_the_policy_its_own(asked, fleet_gets,
                                                                    reads_back):
    f, bounds = fleet()
    act = SimActuator(f, bounds, SimActuatorConfig(concurrency_cap=2, initial_limit=16))
    act.apply(FLEET, Decision(replicas=2, reason="steady", concurrency_limit=asked), "steady")
    assert f.limit == fleet_gets
    assert act.concurrency_limit == reads_back       # Ray's own 16 until the policy sets one


def test_what_the_live_actuators_do_not_apply_is_not_applied():
    from trimtab.up.fidelity import LIVE_UNAPPLIED

    # The sidecar gate and the Ray Serve actuator never set the admission timeout.
    assert LIVE_UNAPPLIED == ("queue_timeout_s",)
    f, bounds = fleet()
    before = f.queue_timeout_s
    act = SimActuator(f, bounds, SimActuatorConfig(unapplied=LIVE_UNAPPLIED))
    applied = act.apply(FLEET, Decision(replicas=3, reason="scale_up", queue_timeout_s=0.2,
                                        max_batch_size=4), "scale_up")
    assert f.queue_timeout_s == before and f.max_batch == 4 and f.desired == 3
    assert applied.changes == {"max_batch_size": (8, 4), "replicas": (2, 3)}
    with pytest.raises(ValueError, match="unapplied = \\['replicas'\\]: not a pod setting"):
        SimActuatorConfig(unapplied=("replicas",))


def test_the_live_model_is_these_settings():
    from trimtab.up.fidelity import LiveModel
    from trimtab.up.fit import Saturation, ServiceFit
    from trimtab.up.run import FLEET_MAX_ONGOING

    measured, effective = ServiceFit(40.0, 60.0, 0.05, 10), ServiceFit(9.5, 90.5, 0.05, 10)
    model = LiveModel(measured=measured, service=effective,
                      saturation=Saturation(concurrency=2, rps=10.0, mean_batch=2.0,
                                            windows=3),
                      hop_s=0.02, cold_start_s=2.0, lag=2)
    src = model.source(interval_s=3.0)
    assert (src.rate_window_s, src.counted_at_completion, src.gate_per_replica) == (
        6.0, True, FLEET_MAX_ONGOING)
    assert src.measured_line_ms == (40.0, 60.0) and src.effective_line_ms == (9.5, 90.5)
    act = model.actuation()
    assert (act.concurrency_cap, act.initial_limit, act.unapplied) == (
        2, FLEET_MAX_ONGOING, ("queue_timeout_s",))
