"""The Kubernetes actuator through the official client against the stand-in: 409, 429, 5xx, pause, events."""
from __future__ import annotations

import pytest

from trimtab.controllers.shell.actuators.base import ActuationError, WorkloadRef
from trimtab.controllers.shell.actuators.kubernetes import KubernetesActuator
from tests.support.kube_standin import KubeStandIn
from trimtab.controllers.core.types import Decision

LLAMA = WorkloadRef("Deployment", "prod", "llama")


def scale_to(n: int, reason: str = "scale_up") -> Decision:
    return Decision(replicas=n, reason=reason)


@pytest.fixture
def actuator(standin: KubeStandIn, kube_api) -> KubernetesActuator:
    standin.add_deployment("prod", "llama", replicas=2)
    return KubernetesActuator(kube_api, unix_time=lambda: 1.7e9)


def test_scales_through_the_scale_subresource_and_records_an_event(standin, actuator) -> None:
    applied = actuator.apply(LLAMA, scale_to(5), "scale_up")
    assert applied.changes == {"replicas": (2, 5)}
    assert standin.get("deployments", "prod", "llama")["spec"]["replicas"] == 5
    assert standin.count("PUT", "/deployments/llama/scale") == 1
    (event,) = standin.events("prod")
    assert event["reason"] == "TrimtabScaled" and "from 2 to 5" in event["message"]
    assert "scale_up" in event["message"]
    assert event["involvedObject"]["kind"] == "Deployment"
    # Idempotent: the same decision again changes nothing and writes nothing.
    assert actuator.apply(LLAMA, scale_to(5), "steady").changes == {}
    assert standin.count("PUT", "/scale") == 1 and len(standin.events()) == 1


def test_statefulsets_too(standin, kube_api) -> None:
    standin.add_workload("prod", "db", replicas=1, kind="StatefulSet")
    act = KubernetesActuator(kube_api)
    ref = WorkloadRef("StatefulSet", "prod", "db")
    act.apply(ref, scale_to(3), "scale_up")
    assert act.current_replicas(ref) == 3


def test_conflict_is_retried_after_a_fresh_read(standin, actuator) -> None:
    standin.inject(409, count=2, match="PUT /apis/apps/v1/namespaces/prod/deployments/llama/scale")
    assert actuator.apply(LLAMA, scale_to(4), "scale_up").changes == {"replicas": (2, 4)}
    assert standin.count("GET", "/deployments/llama") == 3       # one read per attempt
    assert standin.get("deployments", "prod", "llama")["spec"]["replicas"] == 4


def test_conflicts_every_time_give_up_as_retryable(standin, actuator) -> None:
    standin.inject(409, count=10, match="PUT")
    with pytest.raises(ActuationError) as err:
        actuator.apply(LLAMA, scale_to(4), "scale_up")
    assert (err.value.error, err.value.retryable) == ("conflict", True)
    assert standin.get("deployments", "prod", "llama")["spec"]["replicas"] == 2


@pytest.mark.parametrize("code, error, retryable", [
    (429, "throttled", True), (500, "server_error", True), (503, "server_error", True),
], ids=["429", "500", "503"])
def test_throttling_and_server_errors_are_retryable(standin, actuator, code, error,
                                                    retryable) -> None:
    standin.inject(code, count=1, match="PUT")
    with pytest.raises(ActuationError) as err:
        actuator.apply(LLAMA, scale_to(4), "scale_up")
    assert (err.value.error, err.value.retryable) == (error, retryable)
    # The fault clears: the next attempt goes through.
    assert actuator.apply(LLAMA, scale_to(4), "scale_up").changes == {"replicas": (2, 4)}


def test_missing_workload_is_not_retryable(actuator) -> None:
    with pytest.raises(ActuationError) as err:
        actuator.apply(WorkloadRef("Deployment", "prod", "ghost"), scale_to(2), "x")
    assert (err.value.error, err.value.retryable) == ("not_found", False)


def test_unreachable_api_server_is_retryable(standin, actuator) -> None:
    standin.stop()
    actuator.timeout_s = 1.0
    with pytest.raises(ActuationError) as err:
        actuator.apply(LLAMA, scale_to(3), "scale_up")
    assert (err.value.error, err.value.retryable) == ("unreachable", True)


@pytest.mark.parametrize("value, paused", [("true", True), ("True", True), ("false", False),
                                           (None, False)], ids=["true", "True", "false", "absent"])
def test_pause_annotation_is_honoured(standin, actuator, value, paused) -> None:
    standin.set_annotation("deployments", "prod", "llama", "trimtab.io/paused", value)
    applied = actuator.apply(LLAMA, scale_to(7), "scale_up")
    assert (applied.note == "paused") is paused
    expected = 2 if paused else 7
    assert standin.get("deployments", "prod", "llama")["spec"]["replicas"] == expected
    assert len(standin.events()) == (0 if paused else 1)


def test_invalid_decision_applies_nothing(standin, actuator) -> None:
    assert actuator.apply(LLAMA, Decision(1, "hold_stale_metrics", valid=False), "x").changes == {}
    assert standin.count("GET") == 0
