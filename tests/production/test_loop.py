"""The control loop with a fake clock, scripted source and recording actuators: safety stages and isolation."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings, strategies as st

from trimtab.controllers.shell.actuators.base import ActuationError, Actuator, Applied, WorkloadRef
from trimtab.controllers.shell.clock import ManualClock
from trimtab.controllers.shell.loop import ControlLoop, Target
from trimtab.controllers.shell.metrics import ControllerMetrics
from trimtab.controllers.shell.sources.base import Source, TargetSelector
from trimtab.controllers.core.types import Decision, Snapshot
from tests.production.conftest import BOUNDS, ScriptedPolicy, snapshot


@dataclass
class FakeSource(Source):
    name: str = "fake"
    snaps: dict[str, Snapshot] = field(default_factory=dict)
    fail: Exception | None = None

    def read(self, targets, now_s, window_s):
        if self.fail is not None:
            raise self.fail
        return {t.key: self.snaps[t.key].with_(time_s=now_s) for t in targets
                if t.key in self.snaps}


@dataclass
class FakeActuator(Actuator):
    name: str = "kubernetes"
    replicas: dict[str, int] = field(default_factory=dict)
    applied: list[tuple[str, int]] = field(default_factory=list)
    fail_next: list[ActuationError] = field(default_factory=list)
    paused: set[str] = field(default_factory=set)

    def apply(self, workload: WorkloadRef, decision: Decision, reason: str) -> Applied:
        if self.fail_next:
            raise self.fail_next.pop(0)
        if workload.key in self.paused:
            return Applied(note="paused")
        old = self.replicas.get(workload.key)
        self.replicas[workload.key] = decision.replicas
        if old != decision.replicas:
            self.applied.append((workload.key, decision.replicas))
        return Applied({"replicas": (old, decision.replicas)} if old != decision.replicas else {})

    def current_replicas(self, workload: WorkloadRef) -> int | None:
        return self.replicas.get(workload.key)


def make_target(name: str = "llama", policy: ScriptedPolicy | None = None, warmup_s: float = 0.0,
                shadows=()) -> Target:
    return Target(WorkloadRef("Deployment", "prod", name),
                  TargetSelector(f"prod/{name}", {"namespace": "prod", "model": name}),
                  policy or ScriptedPolicy(), model=name, bounds=BOUNDS, warmup_s=warmup_s,
                  shadows=tuple(shadows))


def make_loop(targets, source, actuators, **kw) -> tuple[ControlLoop, ManualClock]:
    clock = ManualClock(1000.0)
    loop = ControlLoop(targets, source, actuators, clock, ControllerMetrics(),
                       unix_time=lambda: 1.7e9, **kw)
    return loop, clock


def holding(loop: ControlLoop, reason: str, name: str = "llama") -> float:
    return loop.metrics.value("trimtab_controller_holding", {
        "namespace": "prod", "workload": name, "model": name, "reason": reason})


# Each case: what the source gives, what the policy wants (from 4 replicas), and what must
# happen. The counterfactual is in the id: without the rule, the loop would scale to 1.
SAFETY_CASES = [
    pytest.param(dict(stale=frozenset({"arrival_rate_rps"})), 1, 4, "stale", False,
                 id="stale-metrics-hold-would-scale-to-1"),
    pytest.param(dict(arrival_rate_rps=None, missing=frozenset({"arrival_rate_rps"})), 1, 4,
                 "missing", False, id="missing-arrival-hold"),
    pytest.param(dict(arrival_rate_rps=math.nan), 1, 4, "missing", False,
                 id="nan-arrival-hold"),
    pytest.param(dict(queue_depth=None, missing=frozenset({"queue_depth"})), 1, 4, "missing",
                 True, id="partial-no-scale-down-on-imputed"),
    pytest.param(dict(queue_depth=None, missing=frozenset({"queue_depth"})), 9, 9, None, True,
                 id="partial-may-scale-up"),
    pytest.param(dict(), 1, 1, None, True, id="healthy-scales-down"),
    pytest.param(dict(), 50, 20, None, True, id="bounds-clamp-max"),
]


@pytest.mark.parametrize("snap_kw, wants, expect, hold, actuates", SAFETY_CASES)
def test_safety_stage_table(snap_kw, wants, expect, hold, actuates) -> None:
    act = FakeActuator(replicas={"prod/llama": 4})
    loop, clock = make_loop([make_target(policy=ScriptedPolicy(wants))],
                            FakeSource(snaps={"prod/llama": snapshot(**snap_kw)}), [act])
    (rec,) = loop.tick(clock.now_s())
    assert rec.decision.replicas == expect
    assert rec.hold == hold
    assert act.replicas["prod/llama"] == expect
    assert bool(act.applied) == (actuates and expect != 4)
    if hold:
        assert holding(loop, hold) == 1.0


def test_source_failure_holds_every_target_and_counts_the_error() -> None:
    act = FakeActuator(replicas={"prod/a": 5, "prod/b": 5})
    src = FakeSource(fail=ConnectionRefusedError("prometheus down"))
    loop, clock = make_loop([make_target("a", ScriptedPolicy(1)),
                             make_target("b", ScriptedPolicy(1))], src, [act])
    records = loop.tick(clock.now_s())
    assert [r.hold for r in records] == ["source_error", "source_error"]
    assert act.applied == []
    assert loop.metrics.value("trimtab_controller_source_errors_total",
                              {"source": "fake", "error": "ConnectionRefusedError"}) == 1
    assert loop.metrics.value("trimtab_controller_last_success_timestamp_seconds") == 0
    # Recovery: the source answers again, the decision goes through.
    src.fail = None
    src.snaps = {"prod/a": snapshot(), "prod/b": snapshot()}
    clock.advance(15)
    records = loop.tick(clock.now_s())
    assert [r.hold for r in records] == [None, None]
    assert act.replicas == {"prod/a": 1, "prod/b": 1}
    assert loop.metrics.value("trimtab_controller_last_success_timestamp_seconds") == 1.7e9
    assert holding(loop, "source_error", "a") == 0.0


def test_warmup_blocks_scale_down_until_windows_fill() -> None:
    act = FakeActuator(replicas={"prod/llama": 6})
    loop, clock = make_loop([make_target(policy=ScriptedPolicy(2), warmup_s=60)],
                            FakeSource(snaps={"prod/llama": snapshot()}), [act])
    for _ in range(4):     # t = 0, 15, 30, 45 s after start: still warming up
        (rec,) = loop.tick(clock.now_s())
        assert (rec.decision.replicas, rec.hold) == (6, "warmup")
        clock.advance(15)
    (rec,) = loop.tick(clock.now_s())          # t = 60 s
    assert (rec.decision.replicas, rec.hold) == (2, None)
    assert act.replicas["prod/llama"] == 2


def test_a_workload_scaled_by_hand_is_seen_and_not_scaled_down_on_missing_data() -> None:
    # The loop applied 2; a person then scaled the Deployment to 6, and in_flight went
    # missing. Counterfactual: comparing with the count it last applied (2), the loop saw no
    # scale-down and set the Deployment back to 2 on imputed data.
    act = FakeActuator(replicas={"prod/llama": 4})
    src = FakeSource(snaps={"prod/llama": snapshot()})
    loop, clock = make_loop([make_target(policy=ScriptedPolicy(2))], src, [act])
    (rec,) = loop.tick(clock.now_s())
    assert act.replicas["prod/llama"] == 2 and rec.current_replicas == 4
    act.replicas["prod/llama"] = 6                       # kubectl scale --replicas=6
    src.snaps["prod/llama"] = snapshot(in_flight=None, missing=frozenset({"in_flight"}))
    clock.advance(15)
    (rec,) = loop.tick(clock.now_s())
    assert rec.current_replicas == 6
    assert (rec.decision.replicas, rec.hold) == (6, "missing")
    assert act.replicas["prod/llama"] == 6
    # With the data back, the policy's scale-down goes through from the real count.
    src.snaps["prod/llama"] = snapshot()
    clock.advance(15)
    (rec,) = loop.tick(clock.now_s())
    assert (rec.current_replicas, rec.decision.replicas, rec.hold) == (6, 2, None)
    assert act.replicas["prod/llama"] == 2


def test_capabilities_are_declared_by_every_actuator_and_source() -> None:
    """The loop reads sets_replicas, resync and last_errors as attributes, never probes."""
    from trimtab.controllers.shell.actuators.kubernetes import KubernetesActuator
    from trimtab.controllers.shell.actuators.ray_serve import RayServeActuator
    from trimtab.controllers.shell.actuators.sidecar import SidecarActuator
    from trimtab.controllers.shell.sources.prometheus import PrometheusSource
    from trimtab.controllers.shell.sources.sidecar import SidecarSource

    assert [a.sets_replicas for a in (KubernetesActuator, RayServeActuator, SidecarActuator)] \
        == [True, True, False]
    assert FakeActuator().resync(WorkloadRef("Deployment", "prod", "x")) is None   # default
    assert SidecarActuator.resync is not Actuator.resync
    assert FakeSource().last_errors == ()
    assert Source in PrometheusSource.__mro__ and Source in SidecarSource.__mro__
    import inspect

    from trimtab.controllers.shell import loop as loop_module

    text = inspect.getsource(loop_module)
    assert "getattr(" not in text and "hasattr(" not in text


def test_one_target_failing_never_stops_the_others() -> None:
    class Broken(ScriptedPolicy):
        def decide(self, snap, state, now_s):
            raise RuntimeError("bug in a policy")

    act = FakeActuator(replicas={"prod/a": 1, "prod/b": 1})
    loop, clock = make_loop([make_target("a", Broken()), make_target("b", ScriptedPolicy(3))],
                            FakeSource(snaps={"prod/a": snapshot(), "prod/b": snapshot()}), [act])
    records = loop.tick(clock.now_s())
    assert [r.key for r in records] == ["prod/b"]
    assert act.replicas["prod/b"] == 3
    assert loop.metrics.value("trimtab_controller_actuation_errors_total", {
        "namespace": "prod", "workload": "a", "model": "a", "actuator": "loop",
        "error": "RuntimeError"}) == 1


def test_retryable_api_errors_back_off_in_loop_time_then_recover() -> None:
    act = FakeActuator(replicas={"prod/llama": 2},
                       fail_next=[ActuationError("throttled", "429")] * 2)
    loop, clock = make_loop([make_target(policy=ScriptedPolicy(5))],
                            FakeSource(snaps={"prod/llama": snapshot()}), [act])
    outcomes = []
    for _ in range(6):
        (rec,) = loop.tick(clock.now_s())
        outcomes.append((rec.actuated, rec.errors, rec.hold))
        clock.advance(15)
    # fail, retry at once and fail, then skip one interval (backoff), then succeed.
    assert outcomes[0] == (False, ("kubernetes:throttled",), None)
    assert outcomes[1] == (False, ("kubernetes:throttled",), None)
    assert outcomes[2] == (False, (), "backoff")
    assert outcomes[3][0] is True and act.replicas["prod/llama"] == 5
    assert loop.metrics.value("trimtab_controller_actuation_errors_total", {
        "namespace": "prod", "workload": "llama", "model": "llama", "actuator": "kubernetes",
        "error": "throttled"}) == 2


def test_dry_run_and_followers_compute_but_apply_nothing() -> None:
    class Follower:
        def is_leader(self, now_s):
            return False

    for kw in (dict(dry_run=True), dict(leader=Follower())):
        act = FakeActuator(replicas={"prod/llama": 2})
        policy = ScriptedPolicy(7)
        loop, clock = make_loop([make_target(policy=policy)],
                                FakeSource(snaps={"prod/llama": snapshot()}), [act], **kw)
        for _ in range(3):
            loop.tick(clock.now_s())
            clock.advance(15)
        assert act.applied == []
        assert len(policy.seen) == 3          # forecasts kept warm on every tick
        assert loop.metrics.value("trimtab_controller_desired_replicas", {
            "namespace": "prod", "workload": "llama", "model": "llama",
            "policy": "scripted"}) == 7


def test_shadow_policies_are_exported_never_applied() -> None:
    act = FakeActuator(replicas={"prod/llama": 3})
    shadow = ScriptedPolicy(12, name="shadow")
    loop, clock = make_loop([make_target(policy=ScriptedPolicy(3), shadows=[shadow])],
                            FakeSource(snaps={"prod/llama": snapshot()}), [act])
    (rec,) = loop.tick(clock.now_s())
    assert rec.shadows["shadow"].replicas == 12
    assert act.replicas["prod/llama"] == 3
    assert loop.metrics.value("trimtab_controller_desired_replicas", {
        "namespace": "prod", "workload": "llama", "model": "llama", "policy": "shadow"}) == 12


def test_forecast_and_its_error_are_exported() -> None:
    src = FakeSource(snaps={"prod/llama": snapshot(arrival_rate_rps=10.0)})
    loop, clock = make_loop([make_target()], src, [FakeActuator(replicas={"prod/llama": 2})])
    loop.tick(clock.now_s())                       # forecasts 10 (the scripted policy echoes)
    src.snaps["prod/llama"] = snapshot(arrival_rate_rps=8.0)
    clock.advance(15)
    loop.tick(clock.now_s())
    labels = {"namespace": "prod", "workload": "llama", "model": "llama"}
    assert loop.metrics.value("trimtab_controller_forecast_requests_per_second", labels) == 8.0
    assert loop.metrics.value("trimtab_controller_observed_requests_per_second", labels) == 8.0
    assert loop.metrics.value("trimtab_controller_forecast_error_ratio",
                              labels) == pytest.approx(0.25)   # |10 - 8| / 8


def test_policy_sees_current_and_starting_replicas() -> None:
    policy = ScriptedPolicy(5)
    act = FakeActuator(replicas={"prod/llama": 5})
    loop, clock = make_loop([make_target(policy=policy)],
                            FakeSource(snaps={"prod/llama": snapshot(ready_replicas=3)}), [act])
    loop.tick(clock.now_s())
    (seen,) = policy.seen
    assert (seen.desired_replicas, seen.ready_replicas, seen.starting_replicas) == (5, 3, 2)


def test_pause_is_exported_as_a_hold() -> None:
    act = FakeActuator(replicas={"prod/llama": 3}, paused={"prod/llama"})
    loop, clock = make_loop([make_target(policy=ScriptedPolicy(8))],
                            FakeSource(snaps={"prod/llama": snapshot()}), [act])
    (rec,) = loop.tick(clock.now_s())
    assert rec.hold == "paused" and act.replicas["prod/llama"] == 3
    assert holding(loop, "paused") == 1.0


def test_run_stops_after_ticks_and_advances_the_fake_clock() -> None:
    loop, clock = make_loop([make_target()], FakeSource(snaps={"prod/llama": snapshot()}), [],
                            interval_s=15.0)
    assert loop.run(ticks=4) == 4
    assert clock.now_s() == pytest.approx(1000.0 + 45.0)


snap_fields = st.fixed_dictionaries({
    "arrival_rate_rps": st.one_of(st.none(), st.just(math.nan),
                                  st.floats(0, 1e4, allow_nan=False)),
    "queue_depth": st.one_of(st.none(), st.floats(0, 100)),
    "stale": st.sampled_from([frozenset(), frozenset({"arrival_rate_rps"})]),
})


@settings(max_examples=150, deadline=None)
@given(fields=snap_fields, wants=st.integers(0, 60), current=st.integers(1, 20),
       warm=st.booleans())
def test_invariants_bounds_hold_and_no_scale_down_on_bad_data(fields, wants, current,
                                                              warm) -> None:
    missing = frozenset(k for k in ("arrival_rate_rps", "queue_depth") if fields[k] is None)
    snap = snapshot(missing=missing, **fields)
    act = FakeActuator(replicas={"prod/llama": current})
    loop, clock = make_loop([make_target(policy=ScriptedPolicy(wants),
                                         warmup_s=0.0 if warm else 1e9)],
                            FakeSource(snaps={"prod/llama": snap}), [act])
    (rec,) = loop.tick(clock.now_s())
    final = act.replicas["prod/llama"]
    bad = bool(missing) or bool(snap.stale) or not math.isfinite(
        snap.arrival_rate_rps if snap.arrival_rate_rps is not None else math.nan) or not warm
    if bad:
        assert final >= current, f"scaled down on bad data: {fields} {current}->{final}"
        assert rec.hold is not None or final == current or final > current
    if rec.actuated:
        assert BOUNDS.min_replicas <= final <= BOUNDS.max_replicas
