"""The Ray Serve actuator's logic against a recorded Serve-details payload (no Ray needed)."""
from __future__ import annotations

import copy

import pytest
from hypothesis import given, strategies as st

from trimtab.controllers.shell.actuators.base import ActuationError, WorkloadRef
from trimtab.controllers.shell.actuators.ray_serve import (ERROR_CODES, RayServeActuator, desired_overrides,
                                             diff_settings)
from trimtab.controllers.core.types import Decision

W = WorkloadRef("RayServeDeployment", "demo", "mlp")

# Shape of ServeControllerClient.get_serve_details() from Ray 2.60 (trimmed recording).
DETAILS = {
    "proxy_location": "EveryNode",
    "http_options": {"host": "127.0.0.1", "port": 8000},
    "grpc_options": {},
    "target_capacity": None,
    "applications": {
        "demo": {
            "deployed_app_config": {
                "name": "demo", "route_prefix": "/", "import_path": "trimtab.up.model:app",
                "deployments": [{"name": "mlp", "num_replicas": 2,
                                 "user_config": {"trimtab": {"max_batch_size": 4},
                                                 "threshold": 0.3}}]},
            "deployments": {"mlp": {
                "status": "HEALTHY", "target_num_replicas": 2,
                "deployment_config": {"num_replicas": 2, "max_ongoing_requests": 16,
                                      "user_config": {"trimtab": {"max_batch_size": 4},
                                                      "threshold": 0.3}},
                "replicas": [{"replica_id": "a", "actor_id": "A1", "state": "RUNNING"},
                             {"replica_id": "b", "actor_id": "B1", "state": "STARTING"}]}},
        },
        "other": {
            "deployed_app_config": {"name": "other", "route_prefix": "/other",
                                    "import_path": "x.y:app"},
            "deployments": {"d": {"deployment_config": {"num_replicas": 1}}},
        },
    },
}


class FakeClient:
    """Records deploy_apps calls; answers get_serve_details with a copy of ``details``."""

    def __init__(self, details=DETAILS, fail_with: Exception | None = None) -> None:
        self.details = copy.deepcopy(details)
        self.deployed: list = []
        self.fail_with = fail_with

    def get_serve_details(self):
        if self.fail_with is not None:
            raise self.fail_with
        return copy.deepcopy(self.details)

    def deploy_apps(self, schema, _blocking=False):
        self.deployed.append(schema.model_dump(exclude_unset=True))


def make(client: FakeClient) -> RayServeActuator:
    return RayServeActuator(client_factory=lambda: client)


def test_apply_redeploys_every_app_changing_only_the_target_deployment():
    client = FakeClient()
    pytest.importorskip("ray.serve")
    applied = make(client).apply(W, Decision(replicas=3, reason="scale_up", max_batch_size=8,
                                             concurrency_limit=12), "scale_up")
    assert applied.changes == {"replicas": (2, 3), "max_batch_size": (4, 8),
                               "concurrency_limit": (16, 12)}
    (cfg,) = client.deployed
    apps = {a["name"]: a for a in cfg["applications"]}
    assert set(apps) == {"demo", "other"}          # the other app is re-applied, not deleted
    assert apps["other"]["import_path"] == "x.y:app"
    (dep,) = apps["demo"]["deployments"]
    assert dep["num_replicas"] == 3 and dep["max_ongoing_requests"] == 12
    # The deployment's own user_config keys survive beside trimtab's section.
    assert dep["user_config"] == {"trimtab": {"max_batch_size": 8}, "threshold": 0.3}


def test_nothing_to_change_deploys_nothing():
    client = FakeClient()
    applied = make(client).apply(W, Decision(replicas=2, reason="steady", max_batch_size=4),
                                 "steady")
    assert applied.changes == {} and client.deployed == []


def test_invalid_decision_applies_nothing():
    client = FakeClient()
    make(client).apply(W, Decision(replicas=5, reason="x", valid=False), "x")
    assert client.deployed == []


@pytest.mark.parametrize("mutate, code", [
    (lambda d: d["applications"]["demo"]["deployments"]["mlp"]["deployment_config"].update(
        autoscaling_config={"min_replicas": 1}), "conflict"),
    (lambda d: d["applications"]["other"].update(deployed_app_config=None), "conflict"),
    (lambda d: d["applications"].pop("demo"), "not_found"),
], ids=["ray-autoscaling-on", "app-deployed-with-serve-run", "app-gone"])
def test_config_problems_are_bounded_non_retryable_errors(mutate, code):
    details = copy.deepcopy(DETAILS)
    mutate(details)
    client = FakeClient(details)
    with pytest.raises(ActuationError) as info:
        make(client).apply(W, Decision(replicas=3, reason="scale_up"), "scale_up")
    assert info.value.error == code and not info.value.retryable
    assert client.deployed == []


class GetTimeoutError(Exception):
    pass


class RayActorError(Exception):
    pass


@pytest.mark.parametrize("exc, code, retryable", [
    (GetTimeoutError("slow"), "timeout", True),
    (RayActorError("controller died"), "unavailable", True),
    (RuntimeError("boom"), "error", True),
], ids=["timeout", "controller-lost", "other"])
def test_ray_failures_map_to_bounded_codes(exc, code, retryable):
    with pytest.raises(ActuationError) as info:
        make(FakeClient(fail_with=exc)).apply(W, Decision(replicas=3, reason="x"), "x")
    assert info.value.error == code and info.value.retryable is retryable
    assert info.value.error in ERROR_CODES


def test_current_and_running_replicas_read_rays_view():
    act = make(FakeClient())
    assert act.current_replicas(W) == 2
    assert act.running_replicas(W) == {"a": "A1"}
    assert act.current_replicas(WorkloadRef("RayServeDeployment", "nope", "mlp")) is None


@pytest.mark.parametrize("decision, field", [
    (Decision(replicas=-1, reason="x"), "replicas"),
    (Decision(replicas=1, reason="x", max_batch_size=0), "max_batch_size"),
    (Decision(replicas=1, reason="x", concurrency_limit=0), "concurrency_limit"),
    (Decision(replicas=1, reason="x", batch_timeout_ms=-1.0), "batch_timeout_ms"),
], ids=["negative-replicas", "zero-batch", "zero-limit", "negative-timeout"])
def test_invalid_values_are_rejected_naming_the_field(decision, field):
    with pytest.raises(ActuationError, match=field) as info:
        desired_overrides(decision, {"name": "mlp"})
    assert info.value.error == "invalid"


@given(replicas=st.integers(0, 50), batch=st.one_of(st.none(), st.integers(1, 256)),
       limit=st.one_of(st.none(), st.integers(1, 256)),
       timeout_ms=st.one_of(st.none(), st.floats(0, 1000)))
def test_overrides_hold_the_decision_and_a_replica_can_always_fill_a_batch(
        replicas, batch, limit, timeout_ms):
    current = {"name": "mlp", "num_replicas": 2, "max_ongoing_requests": 8,
               "user_config": {"trimtab": {"max_batch_size": 4}, "keep": 1}}
    d = Decision(replicas=replicas, reason="x", max_batch_size=batch, concurrency_limit=limit,
                 batch_timeout_ms=timeout_ms)
    out = desired_overrides(d, current)
    section = out["user_config"]["trimtab"]
    assert out["num_replicas"] == replicas
    assert out["user_config"]["keep"] == 1
    assert section["max_batch_size"] == (batch if batch is not None else 4)
    assert out["max_ongoing_requests"] >= section["max_batch_size"]
    assert out["max_ongoing_requests"] == max(limit if limit is not None else 8,
                                              section["max_batch_size"])
    # Applying the same decision again changes nothing (idempotent).
    assert diff_settings(out, desired_overrides(d, out)) == {}
