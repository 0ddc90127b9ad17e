"""The Ray Serve actuator against a real Ray Serve: scale up and down, batch size in place."""
from __future__ import annotations

import time

import pytest

from trimtab.controllers.shell.actuators.base import ActuationError, WorkloadRef
from trimtab.controllers.core.types import Decision
from tests.conftest import free_port

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def fleet():
    from trimtab.up.fleet import FleetConfig, RayFleet

    fleet = RayFleet(FleetConfig(http_port=free_port(), metrics_port=free_port(),
                                 max_batch_size=4))
    with fleet:
        yield fleet
    from trimtab.up.fleet import stray_pids
    assert stray_pids(fleet.temp_dir) == [], "Ray processes left after stop()"


@pytest.fixture(scope="module")
def actuator():
    from trimtab.controllers.shell.actuators.ray_serve import RayServeActuator

    return RayServeActuator()


def wait_for(predicate, timeout_s: float = 40.0, step_s: float = 0.25):
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"condition not met in {timeout_s} s")


def post(url: str) -> dict:
    import json
    import urllib.request

    req = urllib.request.Request(url, data=b'{"seed": 3}',
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_scale_up_keeps_the_first_replica_and_changes_batch_size_in_place(fleet, actuator):
    w = fleet.workload
    before = wait_for(lambda: actuator.running_replicas(w))
    assert len(before) == 1
    applied = actuator.apply(w, Decision(replicas=3, reason="scale_up", max_batch_size=8,
                                         batch_timeout_ms=20.0), "scale_up")
    assert applied.changes["replicas"] == (1, 3)
    assert applied.changes["max_batch_size"] == (4, 8)
    after = wait_for(lambda: (r := actuator.running_replicas(w)) and len(r) == 3 and r)
    # The replica that was running keeps its Ray actor: reconfigured, not restarted.
    for replica_id, actor_id in before.items():
        assert after.get(replica_id) == actor_id
    cfg = actuator.deployment_details(w)["deployment_config"]
    assert cfg["user_config"]["trimtab"] == {"max_batch_size": 8, "batch_wait_timeout_s": 0.02}
    assert actuator.current_replicas(w) == 3


def test_batch_change_reaches_running_replicas_without_restart(fleet, actuator):
    from concurrent.futures import ThreadPoolExecutor

    w = fleet.workload
    before = wait_for(lambda: actuator.running_replicas(w))
    actuator.apply(w, Decision(replicas=len(before), reason="steady", max_batch_size=6,
                               batch_timeout_ms=100.0), "steady")
    wait_for(lambda: actuator.deployment_details(w)["deployment_config"]["user_config"][
        "trimtab"]["max_batch_size"] == 6)
    time.sleep(1.0)   # Serve's control loop calls reconfigure on each replica after that

    # 12 concurrent requests to a replica allowed 6 per batch: batches of more than 4 (the
    # start value) prove the running replicas took the new size.
    with ThreadPoolExecutor(max_workers=36) as pool:
        answers = list(pool.map(lambda _: post(fleet.url), range(36)))
    assert {a["max_batch_size"] for a in answers} == {6}
    sizes = [a["batch_size"] for a in answers]
    assert max(sizes) <= 6
    assert max(sizes) > 4, f"batch sizes {sizes}: no batch above the old limit 4"
    assert actuator.running_replicas(w) == before


def test_scale_down_to_the_minimum_and_no_change_is_a_no_op(fleet, actuator):
    w = fleet.workload
    actuator.apply(w, Decision(replicas=1, reason="scale_down"), "scale_down")
    wait_for(lambda: len(actuator.running_replicas(w)) == 1)
    again = actuator.apply(w, Decision(replicas=1, reason="steady"), "steady")
    assert again.changes == {}
    assert post(fleet.url)["class"] >= 0


@pytest.mark.parametrize("workload, code", [
    (WorkloadRef("RayServeDeployment", "no-such-app", "mlp"), "not_found"),
    (WorkloadRef("RayServeDeployment", "demo", "no-such-deployment"), "not_found"),
    (WorkloadRef("Deployment", "demo", "mlp"), "invalid"),
], ids=["unknown-app", "unknown-deployment", "wrong-kind"])
def test_bad_targets_raise_bounded_non_retryable_errors(fleet, actuator, workload, code):
    with pytest.raises(ActuationError) as info:
        actuator.apply(workload, Decision(replicas=2, reason="scale_up"), "scale_up")
    assert info.value.error == code
    assert not info.value.retryable
    assert actuator.current_replicas(fleet.workload) == 1   # nothing else changed
