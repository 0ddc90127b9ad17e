"""deploy/: every manifest passes kubernetes-validate --strict; CRD objects match a schema we wrote; RBAC is minimal."""
from __future__ import annotations

import importlib.util
import subprocess

import jsonschema
import pytest
import yaml

from trimtab.controllers.shell.config import load_config
from tests.conftest import REPO_ROOT, require_binary

DEPLOY = REPO_ROOT / "deploy"
CRD_KINDS = {"PodMonitor", "PrometheusRule"}


def kustomization() -> dict:
    return yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())


def documents() -> list[dict]:
    docs = []
    for name in kustomization()["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]
    return docs


def test_kustomization_lists_every_manifest_and_they_exist() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml",
                                                         "controller-config.yaml"}
    assert listed == on_disk
    for gen in kustomization()["configMapGenerator"]:
        for f in gen["files"]:
            assert (DEPLOY / f.split("=")[-1]).exists()


def test_kubernetes_validate_strict_passes_every_builtin_manifest() -> None:
    files = [str(DEPLOY / n) for n in kustomization()["resources"]]
    proc = subprocess.run([str(REPO_ROOT / ".venv/bin/kubernetes-validate"), "--strict", *files],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    builtin = [d for d in documents() if d["kind"] not in CRD_KINDS]
    assert out.count(" passed for resource ") == len(builtin), out
    # The only resources it has no schema for are the Prometheus Operator CRDs (checked below).
    for line in out.splitlines():
        if "Couldn't find schema" in line:
            assert any(f"kind {k} " in line for k in CRD_KINDS), line


def test_strict_validation_would_catch_a_typo(tmp_path) -> None:
    """The check above can fail: a misspelt field is rejected."""
    doc = yaml.safe_load((DEPLOY / "serviceaccount.yaml").read_text())
    doc["automountServiceAcountToken"] = True
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([str(REPO_ROOT / ".venv/bin/kubernetes-validate"), "--strict", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


# Written by hand from the Prometheus Operator API reference (monitoring.coreos.com/v1
# PodMonitorSpec, PodMetricsEndpoint, PrometheusRuleSpec, RuleGroup, Rule): only the fields
# we use plus their documented siblings; unknown fields are rejected like --strict does.
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                          r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_META = {"type": "object", "required": ["name", "namespace"],
         "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                        "labels": {"type": "object"}, "annotations": {"type": "object"}},
         "additionalProperties": False}
_SELECTOR = {"type": "object", "properties": {
    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
    "matchExpressions": {"type": "array"}}, "additionalProperties": False}
CRD_SCHEMAS = {
    "PodMonitor": {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
                   "additionalProperties": False, "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PodMonitor"},
        "metadata": _META,
        "spec": {"type": "object", "required": ["selector", "podMetricsEndpoints"],
                 "additionalProperties": False, "properties": {
            "selector": _SELECTOR, "jobLabel": {"type": "string"},
            "namespaceSelector": {"type": "object"}, "podTargetLabels": {"type": "array"},
            "sampleLimit": {"type": "integer", "minimum": 0},
            "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "properties": {
                    "port": {"type": "string"}, "path": {"type": "string"},
                    "scheme": {"enum": ["http", "https"]}, "interval": _DURATION,
                    "scrapeTimeout": _DURATION, "honorLabels": {"type": "boolean"},
                    "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"},
                    "params": {"type": "object"}}}}}}}},
    "PrometheusRule": {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
                       "additionalProperties": False, "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
        "metadata": _META,
        "spec": {"type": "object", "required": ["groups"], "additionalProperties": False,
                 "properties": {"groups": {"type": "array", "items": {
                     "type": "object", "required": ["name", "rules"],
                     "additionalProperties": False, "properties": {
                         "name": {"type": "string", "minLength": 1}, "interval": _DURATION,
                         "limit": {"type": "integer"}, "partial_response_strategy": {
                             "type": "string"},
                         "rules": {"type": "array", "items": {
                             "type": "object", "required": ["expr"],
                             "additionalProperties": False,
                             "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
                             "properties": {
                                 "record": {"type": "string"}, "alert": {"type": "string"},
                                 "expr": {"type": ["string", "integer"]}, "for": _DURATION,
                                 "keep_firing_for": _DURATION,
                                 "labels": {"type": "object",
                                            "additionalProperties": {"type": "string"}},
                                 "annotations": {"type": "object", "additionalProperties": {
                                     "type": "string"}}}}}}}}}}}},
}


@pytest.mark.parametrize("kind", sorted(CRD_KINDS))
def test_prometheus_operator_objects_match_the_documented_crd_fields(kind: str) -> None:
    docs = [d for d in documents() if d["kind"] == kind]
    assert docs
    for d in docs:
        jsonschema.validate(d, CRD_SCHEMAS[kind])
    broken = dict(docs[0], spec={**docs[0]["spec"], "podMetricEndpoints": []})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, CRD_SCHEMAS[kind])


def _generator():
    spec = importlib.util.spec_from_file_location("gen_prometheusrule",
                                                  DEPLOY / "gen_prometheusrule.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_prometheusrule_is_generated_from_alerts_without_drift(tmp_path) -> None:
    assert (DEPLOY / "prometheusrule.yaml").read_text() == _generator().build(), \
        "run: python deploy/gen_prometheusrule.py"
    rule = yaml.safe_load((DEPLOY / "prometheusrule.yaml").read_text())
    source = yaml.safe_load((REPO_ROOT / "alerts" / "trimtab-rules.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    # The rules themselves pass the real promtool.
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run([require_binary("promtool"), "check", "rules", str(rules_file)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# Every Kubernetes client call the controller makes, and the permission it needs. A new call
# in controllers/shell that is not in this table fails the test below, so RBAC follows the code.
CLIENT_CALLS = {
    "read_namespaced_deployment": ("apps", "deployments", "get"),
    "read_namespaced_stateful_set": ("apps", "statefulsets", "get"),
    "read_namespaced_deployment_scale": ("apps", "deployments/scale", "get"),
    "read_namespaced_stateful_set_scale": ("apps", "statefulsets/scale", "get"),
    "replace_namespaced_deployment_scale": ("apps", "deployments/scale", "update"),
    "replace_namespaced_stateful_set_scale": ("apps", "statefulsets/scale", "update"),
    "list_namespaced_pod": ("", "pods", "list"),
    "create_namespaced_event": ("", "events", "create"),
    "read_namespaced_lease": ("coordination.k8s.io", "leases", "get"),
    "create_namespaced_lease": ("coordination.k8s.io", "leases", "create"),
    "replace_namespaced_lease": ("coordination.k8s.io", "leases", "update"),
}
LEASE = "coordination.k8s.io"


def _granted(role: dict) -> set[tuple[str, str, str]]:
    out = set()
    for rule in role["rules"]:
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    assert "*" not in (g, r, v), f"wildcard in {role['metadata']['name']}"
                    out.add((g, r, v))
    return out


def test_rbac_grants_only_the_verbs_the_controller_uses() -> None:
    """Issue 18: namespace-scoped Roles, the verbs the code calls, nothing else."""
    import re

    code = "\n".join(p.read_text() for p in (REPO_ROOT / "controllers").rglob("*.py"))
    called = set(re.findall(r"\.((?:read|list|create|replace|patch|delete|watch)_namespaced_\w+)",
                            code))
    assert called, "the controller calls the Kubernetes API"
    assert called <= CLIENT_CALLS.keys(), f"calls missing from the table: {called - CLIENT_CALLS.keys()}"
    needed = {CLIENT_CALLS[c] for c in called}
    docs = documents()
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs
             if d["kind"] == "Role"}
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    cfg = load_config(DEPLOY / "controller-config.yaml")
    target_namespaces = {t.workload.namespace for t in cfg.targets}
    workload_needed = {p for p in needed if p[0] != LEASE}
    granted_all = set()
    for ns in target_namespaces:
        role = roles[(ns, "trimtab-controller")]
        assert _granted(role) == workload_needed, ns
        assert any(b["metadata"]["namespace"] == ns and b["roleRef"]["name"] == "trimtab-controller"
                   and {"kind": "ServiceAccount", "name": "trimtab-controller",
                        "namespace": "trimtab"} in b["subjects"] for b in bindings), ns
    for role in roles.values():
        granted_all |= _granted(role)
    assert granted_all == needed
    lease_role = roles[(cfg.leader_election.namespace, "trimtab-controller-leader")]
    assert _granted(lease_role) == {p for p in needed if p[0] == LEASE}
    # no Role anywhere but the controller's namespace and the targets' namespaces
    assert {ns for ns, _ in roles} == target_namespaces | {cfg.leader_election.namespace}


def test_network_policies_keep_the_admin_ports_to_the_controller_and_prometheus() -> None:
    docs = documents()
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    admin = policies["trimtab-sidecar-admin"]["spec"]
    model = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "llama")
    labels = model["spec"]["template"]["metadata"]["labels"]
    assert admin["podSelector"]["matchLabels"].items() <= labels.items()
    cfg = load_config(DEPLOY / "controller-config.yaml")
    admin_port = cfg.targets[0].sidecar.admin_port
    rule = next(r for r in admin["ingress"] if {"port": admin_port, "protocol": "TCP"} in r["ports"])
    sources = {f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for f in rule["from"]}
    assert sources == {"trimtab", "monitoring"}
    ctl = policies["trimtab-controller-metrics"]["spec"]
    assert ctl["ingress"][0]["ports"] == [{"port": cfg.metrics_port, "protocol": "TCP"}]


def test_manifests_agree_with_each_other() -> None:
    docs = documents()
    dep = next(d for d in docs if d["kind"] == "Deployment"
               and d["metadata"]["name"] == "trimtab-controller")
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trimtab-controller"
    gen = kustomization()["configMapGenerator"][0]
    assert {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v} == {gen["name"]}
    cfg = load_config(DEPLOY / "controller-config.yaml")
    assert cfg.leader_election.enabled and cfg.leader_election.namespace == "trimtab"
    ports = {p["containerPort"] for c in pod["containers"] for p in c["ports"]}
    assert cfg.metrics_port in ports
    model = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "llama")
    sidecar = next(c for c in model["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "trimtab-sidecar")
    admin = next(p for p in sidecar["ports"] if p["name"] == "trimtab-admin")
    assert admin["containerPort"] == cfg.targets[0].sidecar.admin_port
    monitor = next(d for d in docs if d["kind"] == "PodMonitor"
                   and d["metadata"]["name"] == "trimtab-sidecars")
    labels = model["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "trimtab-admin"


def test_dockerfile_runs_as_non_root_with_the_trimtab_entrypoint() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "USER 65532" in text and 'ENTRYPOINT ["trimtab"]' in text
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (REPO_ROOT / src).exists(), src


def _secret_names(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["secretName"]} if isinstance(node.get("secretName"), str) else set()
        return found.union(*(_secret_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_secret_names(v) for v in node))
    return set()


def test_the_readme_says_how_to_create_every_secret_the_manifests_mount() -> None:
    """Issue 18 (13): the kustomization pointed to a Secret "named in README.md" that was not."""
    readme = (REPO_ROOT / "README.md").read_text()
    secrets = _secret_names(documents())
    assert secrets, "the manifests mount the control token Secret"
    for name in secrets:
        assert f"create secret generic {name}" in readme, name
