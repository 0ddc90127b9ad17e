"""Kubernetes against a real kube-apiserver 1.20 and etcd: scale, 409, Events, Lease, RBAC, kubectl.

The stand-in (tests/support/kube_standin.py) keeps the fast unit tests; these show the same code
against the real API server, its RBAC authorizer and its controllers. `make kube` builds them.
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Callable

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trimtab.controllers.core.types import Decision
from trimtab.controllers.shell.actuators.base import ActuationError, WorkloadRef
from trimtab.controllers.shell.actuators.kubernetes import KubernetesActuator, make_api_client
from trimtab.controllers.shell.clock import WallClock
from trimtab.controllers.shell.leader import LeaderElector
from tests.conftest import REPO_ROOT
from tests.production.kube_real import (  # noqa: F401  (fixtures)
    ISSUER, SERVICE_CIDR, RealKube, kube_admin, kube_controllers, new_namespace, real_kube,
    wait_until)
from tests.production.test_deploy import CLIENT_CALLS, CRD_KINDS

pytestmark = pytest.mark.kube

DEPLOY = REPO_ROOT / "deploy"
IMAGE = "trimtab-test/model-server:0"   # never pulled: there is no kubelet


def deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="m", image=IMAGE)]))))


def stateful_set(name: str, replicas: int) -> client.V1StatefulSet:
    labels = {"app": name}
    return client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1StatefulSetSpec(
            replicas=replicas, service_name=name,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="m", image=IMAGE)]))))


def scaled_events(api, namespace: str) -> list:
    return client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector="reason=TrimtabScaled").items


def test_the_apiserver_starts_quickly(real_kube: RealKube) -> None:
    """Measured for the README: launch to /readyz (6-8 s seen on two loaded cores)."""
    print(f"kube-apiserver ready in {real_kube.apiserver_start_s:.1f} s "
          f"(with certificates and etcd: {real_kube.start_s:.1f} s)")
    assert real_kube.apiserver_start_s < 60
    version = client.VersionApi(make_api_client(str(real_kube.kubeconfig))).get_code()
    assert (version.major, version.minor) == ("1", "20")


# -- the actuator ---------------------------------------------------------------------------
def test_actuator_scales_through_the_scale_subresource_and_the_deployment_reconciles(
        kube_controllers: RealKube, kube_admin) -> None:
    apps, core = client.AppsV1Api(kube_admin), client.CoreV1Api(kube_admin)
    ns = new_namespace(kube_admin, "scale")
    dep = apps.create_namespaced_deployment(ns, deployment("llama", 2))
    act = KubernetesActuator(make_api_client(str(kube_controllers.kubeconfig)), instance="pod-a")
    llama = WorkloadRef("Deployment", ns, "llama")
    assert act.current_replicas(llama) == 2

    applied = act.apply(llama, Decision(5, "scale_up"), "scale_up")

    assert applied.changes == {"replicas": (2, 5)}
    assert apps.read_namespaced_deployment("llama", ns).spec.replicas == 5
    assert act.current_replicas(llama) == 5
    # The real deployment controller acts on the new spec: its ReplicaSet asks for 5 pods,
    # which are created and stay Pending (no scheduler, no kubelet).
    wait_until("the ReplicaSet asks for 5", lambda: [
        rs for rs in apps.list_namespaced_replica_set(ns).items if rs.spec.replicas == 5],
        timeout_s=60)
    pods = wait_until("5 pods", lambda: (lambda p: p if len(p) == 5 else None)(
        core.list_namespaced_pod(ns, label_selector="app=llama").items), timeout_s=60)
    assert {(p.status.phase, p.spec.node_name) for p in pods} == {("Pending", None)}
    # One core/v1 Event naming the Deployment, also served as events.k8s.io/v1.
    (event,) = scaled_events(kube_admin, ns)
    assert (event.involved_object.kind, event.involved_object.name,
            event.involved_object.uid) == ("Deployment", "llama", dep.metadata.uid)
    assert event.message == "Scaled deployment llama from 2 to 5 replicas: scale_up"
    assert (event.type, event.reporting_component, event.reporting_instance) == (
        "Normal", "trimtab-controller", "pod-a")
    # Read through the typed events.k8s.io/v1 client: the Event carries eventTime (without it
    # the client's EventsV1Event model refuses to deserialise what the server serves).
    (v1_event,) = client.EventsV1Api(kube_admin).list_namespaced_event(
        ns, field_selector="reason=TrimtabScaled").items
    assert (v1_event.regarding.name, v1_event.note) == ("llama", event.message)
    assert v1_event.reporting_controller == "trimtab-controller"
    assert v1_event.event_time is not None and v1_event.action == "Scale"
    # Idempotent: the same decision again writes nothing.
    assert act.apply(llama, Decision(5, "steady"), "steady").changes == {}
    assert len(scaled_events(kube_admin, ns)) == 1


def test_a_write_between_read_and_scale_is_a_real_409_and_the_actuator_re_reads(
        real_kube: RealKube, kube_admin) -> None:
    apps = client.AppsV1Api(kube_admin)
    ns = new_namespace(kube_admin, "conflict")
    apps.create_namespaced_deployment(ns, deployment("llama", 2))
    act = KubernetesActuator(make_api_client(str(real_kube.kubeconfig)))
    llama = WorkloadRef("Deployment", ns, "llama")
    interfere = {"left": 1, "done": 0}
    statuses: list[int] = []
    read = act.apps.read_namespaced_deployment
    replace = act.apps.replace_namespaced_deployment_scale

    def read_then_someone_writes(name, namespace, **kw):
        obj = read(name, namespace, **kw)
        if interfere["left"] > 0:   # another writer changes the Deployment: a new resourceVersion
            interfere["left"] -= 1
            interfere["done"] += 1
            apps.patch_namespaced_deployment(name, namespace, {"metadata": {"annotations": {
                "test/touched": str(interfere["done"])}}})
        return obj

    def replace_recording(*args, **kw):
        try:
            out = replace(*args, **kw)
        except ApiException as exc:
            statuses.append(exc.status)
            raise
        statuses.append(200)
        return out

    act.apps.read_namespaced_deployment = read_then_someone_writes
    act.apps.replace_namespaced_deployment_scale = replace_recording

    applied = act.apply(llama, Decision(6, "scale_up"), "scale_up")

    assert applied.changes == {"replicas": (2, 6)}
    # The first PUT named the stale resourceVersion: the real server answered 409. (A third
    # try is possible only if kube-controller-manager wrote status in the same instant.)
    assert statuses[0] == 409 and statuses[-1] == 200 and len(statuses) <= 3, statuses
    now = apps.read_namespaced_deployment("llama", ns)
    assert now.spec.replicas == 6
    assert now.metadata.annotations["test/touched"] == "1"    # the other write was kept
    assert len(scaled_events(kube_admin, ns)) == 1

    # A writer in every gap: three 409s in a row, a retryable "conflict", nothing written.
    interfere["left"], statuses[:] = 3, []
    with pytest.raises(ActuationError) as err:
        act.apply(llama, Decision(8, "scale_up"), "scale_up")
    assert (err.value.error, err.value.retryable, statuses) == ("conflict", True, [409] * 3)
    assert apps.read_namespaced_deployment("llama", ns).spec.replicas == 6
    assert len(scaled_events(kube_admin, ns)) == 1


# -- leader election ------------------------------------------------------------------------
LEASE_S, RENEW_S, RETRY_S = 3.0, 1.0, 0.25   # renew deadline: 3 - min(2, 1) = 2 s


def test_two_electors_race_for_one_real_lease_and_the_follower_takes_over_after_expiry(
        real_kube: RealKube, kube_admin) -> None:
    """Two controllers (their own clients), one Lease; the leader stops without releasing.

    Checked after every step of either: at most one believes it leads, and only a leader's
    actuator writes. The follower takes over no sooner than one lease duration after the last
    renewal it saw, and no later than that plus one retry (and request time).
    """
    ns = new_namespace(kube_admin, "leader")
    client.AppsV1Api(kube_admin).create_namespaced_deployment(ns, deployment("llama", 1))
    llama = WorkloadRef("Deployment", ns, "llama")
    clock = WallClock()
    ids = ("a", "b")
    electors, actuators = {}, {}
    for ident in ids:
        api = make_api_client(str(real_kube.kubeconfig))
        electors[ident] = LeaderElector(api, ns, "trimtab-controller", ident, clock,
                                        lease_duration_s=LEASE_S, renew_every_s=RENEW_S,
                                        retry_every_s=RETRY_S)
        actuators[ident] = KubernetesActuator(api, instance=ident)

    def leaders(now_s: float) -> list[str]:
        found = [i for i in ids if electors[i].is_leader(now_s)]
        assert len(found) <= 1, f"two leaders at {now_s - t0_s:.2f} s"
        return found

    # The race: both read "no Lease" and create it at the same instant; exactly one wins.
    barrier, first = threading.Barrier(2), {}

    def race(ident: str) -> None:
        barrier.wait()
        first[ident] = electors[ident].step(clock.now_s())

    threads = [threading.Thread(target=race, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(first.values()) == [False, True], first
    leader = next(i for i in ids if first[i])
    follower = next(i for i in ids if i != leader)
    wants = {leader: 2, follower: 3}
    lease = client.CoordinationV1Api(kube_admin).read_namespaced_lease("trimtab-controller", ns)
    assert (lease.spec.holder_identity, lease.spec.lease_duration_seconds,
            lease.spec.lease_transitions) == (leader, 3, 0)

    t0_s = clock.now_s()
    next_s = {i: t0_s for i in ids}
    last_step_s = {i: t0_s for i in ids}
    alive = set(ids)
    stopped_after_s = took_over_s = None
    while took_over_s is None:
        now_s = clock.now_s()
        assert now_s - t0_s < 30, "the follower never took over"
        for ident in sorted(alive):
            if now_s >= next_s[ident]:
                last_step_s[ident] = clock.now_s()
                leading = electors[ident].step(last_step_s[ident])
                next_s[ident] = last_step_s[ident] + (RENEW_S if leading else RETRY_S)
                if ident == leader and last_step_s[ident] - t0_s >= 4 * RENEW_S:
                    assert leaders(clock.now_s()) == [leader]   # it renewed all along
                    # Stop the leader right after a renewal: a crash, no release.
                    alive.discard(leader)
                    stopped_after_s = last_step_s[leader]
                    continue
            current = leaders(clock.now_s())
            if current == [ident]:   # only the leader's loop actuates
                actuators[ident].apply(llama, Decision(wants[ident], "scale_up"), "scale_up")
            leaders(clock.now_s())
        now_s = clock.now_s()
        if stopped_after_s is not None and leaders(now_s) == [follower]:
            took_over_s = now_s
        threading.Event().wait(0.02)

    waited_s = took_over_s - stopped_after_s
    print(f"follower took over {waited_s:.2f} s after the leader's last renewal")
    assert LEASE_S <= waited_s <= LEASE_S + RETRY_S + 2.0   # 2 s: request time under load
    # The old leader stopped trusting itself at its renew deadline, before the takeover.
    assert electors[leader].renew_deadline_s < LEASE_S
    assert not electors[leader].is_leader(took_over_s)
    lease = client.CoordinationV1Api(kube_admin).read_namespaced_lease("trimtab-controller", ns)
    assert (lease.spec.holder_identity, lease.spec.lease_transitions) == (follower, 1)
    # Each wrote only while leading: the leader 1 -> 2, then the follower 2 -> 3.
    written = {(e.reporting_instance, e.message) for e in scaled_events(kube_admin, ns)}
    assert written == {(leader, "Scaled deployment llama from 1 to 2 replicas: scale_up"),
                       (follower, "Scaled deployment llama from 2 to 3 replicas: scale_up")}


# -- RBAC: the controller's ServiceAccount under the real authorizer ------------------------
@pytest.fixture(scope="module")
def controller_sa(real_kube: RealKube, tmp_path_factory) -> dict:
    """deploy/'s Namespaces, ServiceAccount and RBAC applied; a TokenRequest token for the SA.

    Workloads: ``rbac-llama`` (Deployment) and ``rbac-db`` (StatefulSet) in ``models``, the
    namespace the Role covers, and ``llama`` in a namespace it does not.
    """
    for name in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml"):
        real_kube.kubectl("apply", "-f", str(DEPLOY / name))
    admin = make_api_client(str(real_kube.kubeconfig))
    apps = client.AppsV1Api(admin)
    apps.create_namespaced_deployment("models", deployment("rbac-llama", 2))
    apps.create_namespaced_stateful_set("models", stateful_set("rbac-db", 1))
    other = new_namespace(admin, "other")
    apps.create_namespaced_deployment(other, deployment("llama", 2))
    token = client.CoreV1Api(admin).create_namespaced_service_account_token(
        "trimtab-controller", "trimtab", client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[ISSUER], expiration_seconds=3600))
    ).status.token
    path = real_kube.write_kubeconfig(tmp_path_factory.mktemp("sa") / "kubeconfig", token,
                                      "trimtab-controller")
    sa = make_api_client(str(path))
    yield {"sa": sa, "admin": admin, "other": other, "kubeconfig": path}
    sa.close()
    admin.close()


def _scale(read: Callable, name: str, ns: str, replicas: int) -> client.V1Scale:
    scale = read(name, ns)
    scale.spec.replicas = replicas
    return scale


def controller_calls(sa) -> dict[str, Callable[[], object]]:
    """Every call in CLIENT_CALLS, made as the controller makes it (in an order that works)."""
    apps, core, coord = client.AppsV1Api(sa), client.CoreV1Api(sa), client.CoordinationV1Api(sa)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="rbac-llama."),
        involved_object=client.V1ObjectReference(kind="Deployment", name="rbac-llama",
                                                 namespace="models"),
        reason="TrimtabScaled", message="rbac check", type="Normal")
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name="rbac-check"),
                           spec=client.V1LeaseSpec(holder_identity="x",
                                                   lease_duration_seconds=15))
    return {
        "read_namespaced_deployment": lambda: apps.read_namespaced_deployment(
            "rbac-llama", "models"),
        "read_namespaced_stateful_set": lambda: apps.read_namespaced_stateful_set(
            "rbac-db", "models"),
        "read_namespaced_deployment_scale": lambda: apps.read_namespaced_deployment_scale(
            "rbac-llama", "models"),
        "read_namespaced_stateful_set_scale": lambda: apps.read_namespaced_stateful_set_scale(
            "rbac-db", "models"),
        "replace_namespaced_deployment_scale": lambda: apps.replace_namespaced_deployment_scale(
            "rbac-llama", "models", _scale(apps.read_namespaced_deployment_scale,
                                           "rbac-llama", "models", 3)),
        "replace_namespaced_stateful_set_scale": lambda: apps.replace_namespaced_stateful_set_scale(
            "rbac-db", "models", _scale(apps.read_namespaced_stateful_set_scale,
                                        "rbac-db", "models", 2)),
        "list_namespaced_pod": lambda: core.list_namespaced_pod(
            "models", label_selector="app=rbac-llama"),
        "create_namespaced_event": lambda: core.create_namespaced_event("models", event),
        "create_namespaced_lease": lambda: coord.create_namespaced_lease("trimtab", lease),
        "read_namespaced_lease": lambda: coord.read_namespaced_lease("rbac-check", "trimtab"),
        "replace_namespaced_lease": lambda: coord.replace_namespaced_lease(
            "rbac-check", "trimtab", coord.read_namespaced_lease("rbac-check", "trimtab")),
    }


def test_the_service_account_may_make_every_call_the_controller_makes(controller_sa) -> None:
    sa = controller_sa["sa"]
    calls = controller_calls(sa)
    assert calls.keys() == CLIENT_CALLS.keys(), "a call of test_deploy.CLIENT_CALLS is not made"
    for name, call in calls.items():
        try:
            call()
        except ApiException as exc:
            raise AssertionError(f"{name}: {exc.status} {exc.reason}: {exc.body}") from exc
    # The authorizer's own answer for each (group, resource, verb) of the table.
    authz = client.AuthorizationV1Api(sa)
    for name, (group, resource, verb) in CLIENT_CALLS.items():
        res, _, sub = resource.partition("/")
        attributes = client.V1ResourceAttributes(
            group=group, resource=res, subresource=sub or None, verb=verb,
            namespace="trimtab" if group == "coordination.k8s.io" else "models")
        review = authz.create_self_subject_access_review(client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)))
        assert review.status.allowed, (name, review.status.reason)


def test_the_controller_runs_with_the_service_account_token(controller_sa, caplog) -> None:
    """The real actuator and elector, as the SA: scale, Event, Lease, with no 403 anywhere."""
    sa = controller_sa["sa"]
    act = KubernetesActuator(sa)
    llama = WorkloadRef("Deployment", "models", "rbac-llama")
    db = WorkloadRef("StatefulSet", "models", "rbac-db")
    with caplog.at_level(logging.WARNING, logger="trimtab"):
        before = act.current_replicas(llama)
        assert act.apply(llama, Decision(before + 1, "scale_up"), "scale_up").changes == {
            "replicas": (before, before + 1)}
        before_db = act.current_replicas(db)
        assert act.apply(db, Decision(before_db + 1, "scale_up"), "scale_up").changes
        elector = LeaderElector(sa, "trimtab", "trimtab-controller-rbac", "pod-0", WallClock())
        assert elector.step(WallClock().now_s()) is True
        assert elector.step(WallClock().now_s()) is True    # renew: get + update
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    messages = [e.message for e in scaled_events(controller_sa["admin"], "models")]
    assert any(m.startswith(f"Scaled deployment rbac-llama from {before} to ") for m in messages)


def _forbidden_cases(other: str) -> dict[str, Callable[[object], object]]:
    return {
        "scale a Deployment in a namespace not given to it":
            lambda sa: client.AppsV1Api(sa).replace_namespaced_deployment_scale(
                "llama", other, client.V1Scale(metadata=client.V1ObjectMeta(name="llama"),
                                               spec=client.V1ScaleSpec(replicas=9))),
        "read a Deployment in a namespace not given to it":
            lambda sa: client.AppsV1Api(sa).read_namespaced_deployment("llama", other),
        "delete a Deployment": lambda sa: client.AppsV1Api(sa).delete_namespaced_deployment(
            "rbac-llama", "models"),
        "update a Deployment (not its scale)":
            lambda sa: client.AppsV1Api(sa).patch_namespaced_deployment(
                "rbac-llama", "models", {"spec": {"replicas": 9}}),
        "list Secrets where it scales": lambda sa: client.CoreV1Api(sa).list_namespaced_secret(
            "models"),
        "list Secrets in its own namespace": lambda sa: client.CoreV1Api(sa).list_namespaced_secret(
            "trimtab"),
        "create a Pod": lambda sa: client.CoreV1Api(sa).create_namespaced_pod(
            "models", client.V1Pod(metadata=client.V1ObjectMeta(name="x"), spec=client.V1PodSpec(
                containers=[client.V1Container(name="m", image=IMAGE)]))),
        "take a Lease outside its namespace":
            lambda sa: client.CoordinationV1Api(sa).create_namespaced_lease(
                "models", client.V1Lease(metadata=client.V1ObjectMeta(name="x"))),
        "delete a Lease": lambda sa: client.CoordinationV1Api(sa).delete_namespaced_lease(
            "trimtab-controller-rbac", "trimtab"),
        "list Namespaces": lambda sa: client.CoreV1Api(sa).list_namespace(),
    }


FORBIDDEN = list(_forbidden_cases("x"))


@pytest.mark.parametrize("what", FORBIDDEN)
def test_what_the_controller_must_not_do_is_forbidden(controller_sa, what: str) -> None:
    call = _forbidden_cases(controller_sa["other"])[what]
    with pytest.raises(ApiException) as err:
        call(controller_sa["sa"])
    assert err.value.status == 403, (err.value.status, err.value.body)
    assert "trimtab:trimtab-controller" in err.value.body   # denied to this SA, by RBAC
    admin = client.AppsV1Api(controller_sa["admin"])
    kept = admin.read_namespaced_deployment("rbac-llama", "models")
    assert kept.metadata.deletion_timestamp is None
    assert admin.read_namespaced_deployment("llama", controller_sa["other"]).spec.replicas == 2


def test_the_actuator_reports_a_namespace_it_was_not_given_as_forbidden(controller_sa) -> None:
    act = KubernetesActuator(controller_sa["sa"])
    with pytest.raises(ActuationError) as err:
        act.apply(WorkloadRef("Deployment", controller_sa["other"], "llama"),
                  Decision(9, "scale_up"), "scale_up")
    assert (err.value.error, err.value.retryable) == ("forbidden", False)


# -- kubectl apply -k deploy/ ---------------------------------------------------------------
def test_kubectl_apply_k_deploy(kube_controllers: RealKube, tmp_path: Path) -> None:
    """`kubectl apply -k deploy/` to the real apiserver: everything but the CRD kinds is created.

    Needs CRDs: PodMonitor and PrometheusRule (monitoring.coreos.com/v1) come from the
    Prometheus Operator, which this apiserver does not have; the apply reports exactly those
    two kinds as unknown and creates everything else, and the CRD-less subset applies cleanly.
    (Their fields are checked against the documented CRD schema in test_deploy.py.)
    Cannot run without a kubelet: there is no scheduler or kubelet here, so the Deployments'
    ReplicaSets create their pods and the pods stay Pending (no node, no containers): the
    controller never starts, the model server never serves, the Service has no ready endpoint.
    """
    kube = kube_controllers
    kube.kubectl("apply", "-f", str(DEPLOY / "namespace.yaml"))
    for ns in ("trimtab", "models"):   # the Secret the kustomization needs first (README.md)
        made = kube.kubectl("create", "secret", "generic", "trimtab-control-token", "-n", ns,
                            "--from-literal=token=test-token", check=False)
        assert made.returncode == 0 or "AlreadyExists" in made.stderr, made.stderr

    proc = kube.kubectl("apply", "-k", str(DEPLOY), check=False)

    docs = [d for d in yaml.safe_load_all(kube.kubectl("kustomize", str(DEPLOY)).stdout) if d]
    builtin = [d for d in docs if d["kind"] not in CRD_KINDS]
    assert {d["kind"] for d in docs if d["kind"] in CRD_KINDS} == CRD_KINDS
    # Non-zero only because of the CRD kinds, each named as missing.
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines()
             if line.strip() and line.strip() != "ensure CRDs are installed first"]
    refused = {re.search(r'name: "([^"]+)".*no matches for kind "(\w+)"', line).groups()
               for line in lines}
    assert refused == {(d["metadata"]["name"], d["kind"]) for d in docs
                       if d["kind"] in CRD_KINDS}, proc.stderr
    for d in builtin:
        ns = d["metadata"].get("namespace")
        got = kube.get_json(d["kind"].lower(), d["metadata"]["name"], *(["-n", ns] if ns else []))
        assert got["metadata"]["uid"], d["metadata"]["name"]
    # The CRD-less subset applies with no error at all.
    subset = yaml.safe_dump_all(builtin)
    again = kube.kubectl("apply", "-f", "-", input=subset)
    assert again.stderr.strip() == "" and again.stdout.count("\n") == len(builtin), again.stdout

    # No kubelet: ReplicaSets and Pods are made, the pods stay Pending on no node.
    for ns, name, replicas in (("trimtab", "trimtab-controller", 2), ("models", "llama", None)):
        dep = kube.get_json("deployment", name, "-n", ns)
        want = replicas or dep["spec"]["replicas"]
        assert dep["spec"]["replicas"] == want
        pods = wait_until(f"{ns}/{name} pods", lambda: (lambda items: items if len(
            items) == want else None)([p for p in kube.get_json("pods", "-n", ns)["items"]
                                      if p["metadata"]["name"].startswith(name + "-")]),
            timeout_s=90)
        assert {(p["status"]["phase"], p["spec"].get("nodeName")) for p in pods} == {
            ("Pending", None)}
    service = next(d for d in builtin if d["kind"] == "Service")
    svc = kube.get_json("service", service["metadata"]["name"], "-n",
                        service["metadata"]["namespace"])
    assert svc["spec"]["clusterIP"].startswith(SERVICE_CIDR.rsplit(".", 1)[0] + ".")
