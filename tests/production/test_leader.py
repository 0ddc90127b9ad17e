"""Leader election on a Lease in the stand-in: one leader, takeover within a lease duration, release."""
from __future__ import annotations

import threading

import pytest

from trimtab.controllers.shell.actuators.base import WorkloadRef
from trimtab.controllers.shell.actuators.kubernetes import KubernetesActuator
from trimtab.controllers.shell.clock import ManualClock, WallClock
from trimtab.controllers.shell.leader import LeaderElector
from trimtab.controllers.shell.loop import ControlLoop, Target
from trimtab.controllers.shell.metrics import ControllerMetrics
from trimtab.controllers.shell.sources.base import Source as SourceBase, TargetSelector
from tests.production.conftest import BOUNDS, ScriptedPolicy, snapshot


def elector(kube_api, identity: str, clock, **kw) -> LeaderElector:
    return LeaderElector(kube_api, "trimtab", "trimtab-controller", identity, clock,
                         unix_time=lambda: 1.7e9, **kw)


def test_one_leader_then_takeover_within_one_lease_duration(standin, kube_api) -> None:
    clock = ManualClock(0.0)
    a, b = elector(kube_api, "a", clock), elector(kube_api, "b", clock)
    assert a.step(clock.now_s()) is True
    assert b.step(clock.now_s()) is False
    lease = standin.get("leases", "trimtab", "trimtab-controller")
    assert lease["spec"]["holderIdentity"] == "a"
    assert lease["spec"]["leaseDurationSeconds"] == 15
    # Both run their schedules (renew every 10 s, retry every 2 s) for a minute: a keeps it.
    for t in range(1, 61):
        clock.advance(1.0)
        if t % 10 == 0:
            assert a.step(clock.now_s())
        if t % 2 == 0:
            assert not b.step(clock.now_s())
        assert not (a.is_leader(clock.now_s()) and b.is_leader(clock.now_s()))
    # a dies (stops renewing) right after its renewal at t=60.
    took_over_at = None
    for t in range(61, 100):
        clock.advance(1.0)
        leaders = [a.is_leader(clock.now_s()), b.step(clock.now_s()) if t % 2 == 0
                   else b.is_leader(clock.now_s())]
        assert not all(leaders), f"two leaders at t={t}"
        if leaders[1] and took_over_at is None:
            took_over_at = t
    assert took_over_at is not None and took_over_at - 60 <= 15 + 2   # lease + one retry
    lease = standin.get("leases", "trimtab", "trimtab-controller")
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == ("b", 1)


def test_release_on_shutdown_hands_over_at_once(standin, kube_api) -> None:
    clock = ManualClock(0.0)
    a, b = elector(kube_api, "a", clock), elector(kube_api, "b", clock)
    a.step(0.0)
    b.step(0.0)
    a.release()
    assert not a.is_leader(0.0)
    clock.advance(2.0)
    assert b.step(clock.now_s()) is True       # no need to wait 15 s for expiry


def test_api_server_down_leader_stops_before_the_lease_could_expire(standin, kube_api) -> None:
    clock = ManualClock(0.0)
    a = elector(kube_api, "a", clock)
    assert a.step(0.0)
    standin.inject(500, count=100, match="leases")
    clock.advance(10.0)
    assert a.step(clock.now_s()) is True       # renewal failed, still inside the deadline
    clock.advance(3.5)
    assert a.step(clock.now_s()) is False      # 13.5 s > renew deadline 13 s < lease 15 s


def test_only_the_leader_actuates_and_followers_keep_deciding(standin, kube_api) -> None:
    standin.add_deployment("prod", "llama", replicas=2)
    clock = ManualClock(0.0)

    class Source(SourceBase):
        name = "fake"

        def read(self, targets, now_s, window_s):
            return {t.key: snapshot(time_s=now_s) for t in targets}

    def loop(identity: str, policy: ScriptedPolicy):
        el = elector(kube_api, identity, clock)
        target = Target(WorkloadRef("Deployment", "prod", "llama"),
                        TargetSelector("prod/llama", {"model": "llama"}), policy, model="llama",
                        bounds=BOUNDS, warmup_s=0)
        return el, ControlLoop([target], Source(), [KubernetesActuator(kube_api)], clock,
                               ControllerMetrics(), leader=el)

    pa, pb = ScriptedPolicy(5), ScriptedPolicy(9)
    ea, la = loop("a", pa)
    eb, lb = loop("b", pb)
    ea.step(0.0)
    eb.step(0.0)
    la.tick(0.0)
    lb.tick(0.0)
    assert standin.get("deployments", "prod", "llama")["spec"]["replicas"] == 5
    assert len(pb.seen) == 1                                  # the follower decided too
    assert lb.metrics.value("trimtab_controller_is_leader") == 0.0
    assert la.metrics.value("trimtab_controller_is_leader") == 1.0


def test_real_time_thread_renews_and_sigterm_style_stop_releases(standin, kube_api) -> None:
    """Short durations on the wall clock: the run() thread renews, and stop releases the lease."""
    clock = WallClock()
    a = LeaderElector(kube_api, "trimtab", "l2", "a", clock, lease_duration_s=1.5,
                      renew_every_s=0.5, retry_every_s=0.1)
    stop = threading.Event()
    t = threading.Thread(target=a.run, args=(stop,))
    t.start()
    try:
        first = None
        deadline = clock.now_s() + 5
        while clock.now_s() < deadline and first is None:
            if a.is_leader(clock.now_s()):
                first = standin.get("leases", "trimtab", "l2")["metadata"]["resourceVersion"]
            clock.sleep_until(clock.now_s() + 0.05)
        assert first is not None
        clock.sleep_until(clock.now_s() + 1.2)
        assert a.is_leader(clock.now_s())
        assert standin.get("leases", "trimtab", "l2")["metadata"]["resourceVersion"] != first
    finally:
        stop.set()
        t.join(timeout=5)
    assert "holderIdentity" not in standin.get("leases", "trimtab", "l2")["spec"]


@pytest.mark.parametrize("renew, lease", [(15, 15), (20, 15)], ids=["equal", "longer"])
def test_renew_must_be_shorter_than_the_lease(kube_api, renew, lease) -> None:
    with pytest.raises(ValueError, match="renew_every_s"):
        elector(kube_api, "a", ManualClock(), renew_every_s=renew, lease_duration_s=lease)
