"""The Kubernetes API stand-in answers the official client with the real server's semantics and bodies."""
from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.kube_standin import KubeStandIn, selector_matches


def test_scale_subresource_get_put_patch(standin: KubeStandIn, kube_api) -> None:
    standin.add_deployment("prod", "llama", replicas=2)
    apps = client.AppsV1Api(kube_api)
    scale = apps.read_namespaced_deployment_scale("llama", "prod")
    assert (scale.spec.replicas, scale.status.selector) == (2, "app=llama")
    scale.spec.replicas = 4
    assert apps.replace_namespaced_deployment_scale("llama", "prod", scale).spec.replicas == 4
    # merge-patch (dict body) and json-patch (list body) are both the real content types.
    assert apps.patch_namespaced_deployment_scale(
        "llama", "prod", {"spec": {"replicas": 6}}).spec.replicas == 6
    assert apps.patch_namespaced_deployment_scale(
        "llama", "prod", [{"op": "replace", "path": "/spec/replicas", "value": 3}]
    ).spec.replicas == 3
    dep = apps.read_namespaced_deployment("llama", "prod")
    assert dep.spec.replicas == 3 and dep.status.ready_replicas == 3
    assert any(m == "PATCH" for m, _, _ in standin.requests)


def test_stale_resource_version_is_a_409_with_the_real_status_body(standin, kube_api) -> None:
    standin.add_deployment("prod", "llama", replicas=2)
    apps = client.AppsV1Api(kube_api)
    scale = apps.read_namespaced_deployment_scale("llama", "prod")
    standin.bump("deployments", "prod", "llama")       # someone else wrote in between
    scale.spec.replicas = 5
    with pytest.raises(ApiException) as err:
        apps.replace_namespaced_deployment_scale("llama", "prod", scale)
    body = json.loads(err.value.body)
    assert err.value.status == 409
    assert body["kind"] == "Status" and body["reason"] == "Conflict"
    assert body["message"].startswith('Operation cannot be fulfilled on deployments.apps "llama"')
    assert apps.read_namespaced_deployment_scale("llama", "prod").spec.replicas == 2


def test_not_found_and_unauthorized(standin: KubeStandIn, kube_api) -> None:
    apps = client.AppsV1Api(kube_api)
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_stateful_set("ghost", "prod")
    body = json.loads(err.value.body)
    assert (err.value.status, body["reason"], body["details"]) == (
        404, "NotFound", {"name": "ghost", "group": "apps", "kind": "statefulsets"})
    anon = client.ApiClient(client.Configuration(host=standin.url))
    with pytest.raises(ApiException) as err:
        client.AppsV1Api(anon).read_namespaced_deployment("x", "prod")
    assert err.value.status == 401


def test_pods_list_by_label_selector(standin: KubeStandIn, kube_api) -> None:
    standin.add_pod("prod", "llama-1", {"app": "llama", "tier": "gpu"})
    standin.add_pod("prod", "llama-2", {"app": "llama"})
    standin.add_pod("prod", "other", {"app": "other"})
    standin.add_pod("dev", "llama-dev", {"app": "llama"})
    core = client.CoreV1Api(kube_api)
    names = [p.metadata.name for p in core.list_namespaced_pod("prod", label_selector="app=llama").items]
    assert names == ["llama-1", "llama-2"]
    assert [p.metadata.name for p in core.list_namespaced_pod(
        "prod", label_selector="app=llama,tier=gpu").items] == ["llama-1"]


@pytest.mark.parametrize("selector, labels, matches", [
    ("app=a", {"app": "a"}, True),
    ("app=a,tier!=gpu", {"app": "a", "tier": "gpu"}, False),
    ("app in (a, b)", {"app": "b"}, True),
    ("app notin (a)", {"app": "a"}, False),
    ("tier", {"app": "a"}, False),
    ("!tier", {"app": "a"}, True),
    ("", {"x": "y"}, True),
], ids=["eq", "neq", "in", "notin", "exists", "not-exists", "empty"])
def test_label_selector_grammar(selector, labels, matches) -> None:
    assert selector_matches(selector, labels) is matches


def test_events_and_leases(standin: KubeStandIn, kube_api) -> None:
    core, coord = client.CoreV1Api(kube_api), client.CoordinationV1Api(kube_api)
    core.create_namespaced_event("prod", client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="llama."), reason="TrimtabScaled",
        message="m", involved_object=client.V1ObjectReference(kind="Deployment", name="llama")))
    assert standin.events("prod")[0]["reason"] == "TrimtabScaled"
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name="l"),
                           spec=client.V1LeaseSpec(holder_identity="a"))
    created = coord.create_namespaced_lease("ns", lease)
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease("ns", lease)
    assert (err.value.status, json.loads(err.value.body)["reason"]) == (409, "AlreadyExists")
    created.spec.holder_identity = "b"
    updated = coord.replace_namespaced_lease("l", "ns", created)
    assert updated.spec.holder_identity == "b"
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("l", "ns", created)   # old resourceVersion
    assert err.value.status == 409


@pytest.mark.parametrize("code, reason", [(429, "TooManyRequests"), (500, "InternalError"),
                                          (409, "Conflict")], ids=["429", "500", "409"])
def test_fault_injection_answers_the_next_requests(standin, kube_api, code, reason) -> None:
    standin.add_deployment("prod", "llama")
    apps = client.AppsV1Api(kube_api)
    standin.inject(code, count=1, match="GET /apis/apps/v1/namespaces/prod/deployments/llama")
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("llama", "prod")
    assert (err.value.status, json.loads(err.value.body)["reason"]) == (code, reason)
    if code == 429:
        assert err.value.headers["Retry-After"] == "1"
    assert apps.read_namespaced_deployment("llama", "prod").metadata.name == "llama"
