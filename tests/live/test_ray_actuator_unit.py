"""The Ray Serve actuator, source and gate against a recorded Serve-details payload (no Ray)."""
from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, strategies as st

from trimtab.controllers.core.types import FIELD_REPLICAS, Decision, Snapshot
from trimtab.controllers.shell.actuators.base import ActuationError, WorkloadRef
from trimtab.controllers.shell.actuators.gate import GateActuator, gate_limit
from trimtab.controllers.shell.actuators.ray_serve import (ERROR_CODES, RayServeActuator,
                                                           desired_overrides, diff_settings,
                                                           replica_counts, serving_replicas,
                                                           steered_settings)
from trimtab.controllers.shell.actuators.sidecar import SidecarControlClient
from trimtab.controllers.shell.sources.base import TargetSelector
from trimtab.controllers.shell.sources.ray_serve import RayReplicaSource
from trimtab.up.recording import RecordingActuator

W = WorkloadRef("RayServeDeployment", "demo", "mlp")

# What ServeControllerClient.get_serve_details() answered on a real Ray 2.60.0 Serve (recorded
# whole by tests/live/capture_ray_fixture.py): app "demo" (deployment "mlp", 2 RUNNING replicas,
# max_ongoing_requests 16, user_config {"threshold": 0.3, "trimtab": {"max_batch_size": 4,
# "batch_wait_timeout_s": 0.005}}) and app "other" (route /other, 1 replica), both from a config.
RECORDED = Path(__file__).parent / "fixtures" / "ray-serve-2.60.0-details.json"


def recorded_details() -> dict:
    """A fresh copy of the recorded payload (tests mutate their own copy, by name)."""
    return json.loads(RECORDED.read_text())


DETAILS = recorded_details()


def demo_mlp(details: dict) -> dict:
    """The demo app's ``mlp`` deployment in a details payload."""
    return details["applications"]["demo"]["deployments"]["mlp"]


def with_second_replica_starting(details: dict) -> dict:
    """Mutation of the recording: the demo's second replica is still STARTING (a scale-up)."""
    demo_mlp(details)["replicas"][1]["state"] = "STARTING"
    return details


FIRST, SECOND = demo_mlp(DETAILS)["replicas"]
ONE_STARTING = with_second_replica_starting(recorded_details())


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
    assert apps["other"] == DETAILS["applications"]["other"]["deployed_app_config"]
    (dep,) = apps["demo"]["deployments"]
    assert dep["num_replicas"] == 3 and dep["max_ongoing_requests"] == 12
    # The deployment's own user_config key and the batch wait in force survive.
    assert dep["user_config"] == {"trimtab": {"max_batch_size": 8, "batch_wait_timeout_s": 0.005},
                                  "threshold": 0.3}
    assert dep["ray_actor_options"]["num_cpus"] == 0.25
    assert cfg["http_options"] == DETAILS["http_options"]


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
    (lambda d: demo_mlp(d)["deployment_config"].update(
        autoscaling_config={"min_replicas": 1}), "conflict"),
    (lambda d: d["applications"]["other"].update(deployed_app_config=None), "conflict"),
    (lambda d: d["applications"].pop("demo"), "not_found"),
], ids=["ray-autoscaling-on", "app-deployed-with-serve-run", "app-gone"])
def test_config_problems_are_bounded_non_retryable_errors(mutate, code):
    details = recorded_details()
    mutate(details)                            # the named mutation of the recording
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
    assert make(FakeClient()).running_replicas(W) == {
        FIRST["replica_id"]: FIRST["actor_id"], SECOND["replica_id"]: SECOND["actor_id"]}
    act = make(FakeClient(ONE_STARTING))
    assert act.current_replicas(W) == 2                  # Ray's target, not the serving count
    assert act.running_replicas(W) == {FIRST["replica_id"]: FIRST["actor_id"]}
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


def test_replica_states_are_read_once_for_actuator_and_source():
    assert replica_counts(demo_mlp(DETAILS)) == (2, 0)   # as recorded: both RUNNING
    dep = demo_mlp(ONE_STARTING)
    assert replica_counts(dep) == (1, 1)                 # first RUNNING, second STARTING
    assert serving_replicas(dep) == {FIRST["replica_id"]: FIRST["actor_id"]}
    updating = {"replicas": [{"replica_id": "c", "actor_id": "C1", "state": "UPDATING"},
                             {"replica_id": "d", "actor_id": "D1", "state": "RECOVERING"}]}
    assert replica_counts(updating) == (1, 1)            # reconfiguring still serves
    assert steered_settings(dep["deployment_config"]) == {
        "replicas": 2, "concurrency_limit": 16, "max_batch_size": 4,
        "batch_wait_timeout_s": 0.005}


# --- the Ray Serve source ---------------------------------------------------------------------
class StubSource:
    """The inner source: a fixed Snapshot per target and one failed query."""

    name = "stub"
    last_errors = ("queue_depth",)

    def read(self, targets, now_s, window_s):
        return {t.key: Snapshot(time_s=now_s, window_s=window_s, arrival_rate_rps=5.0,
                                ready_replicas=1, missing=frozenset({FIELD_REPLICAS}))
                for t in targets}


SELECTOR = TargetSelector("demo/mlp", {"model": "mlp"})


def test_ray_source_takes_replicas_and_knobs_from_ray():
    source = RayReplicaSource(StubSource(), make(FakeClient(ONE_STARTING)), {"demo/mlp": W})
    snap = source.read([SELECTOR], 30.0, 15.0)["demo/mlp"]
    assert (snap.ready_replicas, snap.starting_replicas) == (1, 1)
    assert (snap.concurrency_limit, snap.max_batch_size) == (16, 4)
    assert snap.batch_timeout_ms == pytest.approx(5.0) and snap.arrival_rate_rps == 5.0
    assert FIELD_REPLICAS not in snap.missing
    assert source.last == {"demo/mlp": snap} and source.last_errors == ("queue_depth",)


def test_ray_source_marks_replicas_missing_when_ray_does_not_answer():
    source = RayReplicaSource(StubSource(), make(FakeClient(fail_with=RayActorError("gone"))),
                              {"demo/mlp": W})
    snap = source.read([SELECTOR], 30.0, 15.0)["demo/mlp"]
    # Not the inner source's one-sidecar count: unknown, so the guards hold.
    assert snap.ready_replicas is None and FIELD_REPLICAS in snap.missing


# --- the gate actuator ------------------------------------------------------------------------
@pytest.mark.parametrize("decision, in_force, limit", [
    pytest.param(Decision(replicas=3, reason="x", concurrency_limit=4), None, 12,
                 id="replicas-times-limit"),
    pytest.param(Decision(replicas=3, reason="x", concurrency_limit=4, max_batch_size=8),
                 None, 24, id="a-replica-holds-a-batch"),
    pytest.param(Decision(replicas=2, reason="x"), 16, 32, id="limit-in-force"),
    pytest.param(Decision(replicas=2, reason="x"), None, 2, id="nothing-known-one-each"),
    pytest.param(Decision(replicas=0, reason="x", concurrency_limit=4), None, 4,
                 id="zero-replicas-still-admits-one-replicas-worth"),
])
def test_gate_limit(decision, in_force, limit):
    assert gate_limit(decision, in_force) == limit


class SidecarStub(ThreadingHTTPServer):
    """The sidecar's control endpoint: records each PUT body, answers ``status``."""

    def __init__(self) -> None:
        self.puts: list[dict] = []
        self.status = 200
        self.tokens: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.puts.append(body)
                stub.tokens.append(self.headers["Authorization"])
                self.send_response(stub.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def sidecar():
    server = SidecarStub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def gate_for(url: str) -> GateActuator:
    return GateActuator(SidecarControlClient(url, "s3cret", timeout_s=2.0), make(FakeClient()))


def test_gate_sets_the_sidecar_limit_once_per_change(sidecar):
    gate = gate_for(f"http://127.0.0.1:{sidecar.server_port}")
    applied = gate.apply(W, Decision(replicas=3, reason="up", concurrency_limit=4), "up")
    assert applied.changes == {"gate_concurrency_limit": (None, 12)}
    assert sidecar.puts == [{"concurrency_limit": 12}] and sidecar.tokens == ["Bearer s3cret"]
    assert gate.apply(W, Decision(replicas=3, reason="x", concurrency_limit=4), "x").changes == {}
    # No limit in the decision: the per-replica limit in force in Ray (16) counts.
    gate.apply(W, Decision(replicas=2, reason="down"), "down")
    assert sidecar.puts[-1] == {"concurrency_limit": 32}
    assert gate.sets_replicas is False and gate.current_replicas(W) is None


@pytest.mark.parametrize("status, code, retryable", [
    (422, "invalid", False), (503, "error", True)], ids=["rejected", "sidecar-error"])
def test_gate_maps_sidecar_answers_to_bounded_errors(sidecar, status, code, retryable):
    sidecar.status = status
    gate = gate_for(f"http://127.0.0.1:{sidecar.server_port}")
    with pytest.raises(ActuationError, match=f"HTTP {status}") as info:
        gate.apply(W, Decision(replicas=3, reason="up", concurrency_limit=4), "up")
    assert (info.value.error, info.value.retryable) == (code, retryable)
    assert gate.limit is None          # not applied: the next tick tries again


def test_gate_without_a_sidecar_is_unavailable_and_retried(port):
    with pytest.raises(ActuationError) as info:
        gate_for(f"http://127.0.0.1:{port}").apply(
            W, Decision(replicas=1, reason="x", concurrency_limit=2), "x")
    assert info.value.error == "unavailable" and info.value.retryable


# --- the demo's recording wrapper -------------------------------------------------------------
def test_recording_actuator_keeps_the_timeline_of_changes_and_errors():
    pytest.importorskip("ray.serve")          # applying validates the Serve config with Ray
    clock = iter([1.0, 2.0])
    rec = RecordingActuator(make(FakeClient()), lambda: next(clock))
    rec.apply(W, Decision(replicas=2, reason="steady", max_batch_size=4), "steady")  # no change
    rec.apply(W, Decision(replicas=3, reason="up", max_batch_size=8), "up")
    assert [(r.at_s, r.reason) for r in rec.history] == [(1.0, "up")]
    assert rec.batch_size_changes() == 1 and rec.sets_replicas and rec.name == "ray_serve"
    with pytest.raises(ActuationError):
        rec.apply(W, Decision(replicas=-1, reason="bad"), "bad")
    assert rec.errors == [(2.0, "invalid")]
