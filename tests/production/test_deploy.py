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


def test_rbac_grants_only_the_verbs_the_controller_uses() -> None:
    roles = {(d["kind"], d["metadata"]["name"]): d for d in documents()
             if d["kind"] in ("ClusterRole", "Role")}
    granted = set()
    for role in roles.values():
        for rule in role["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        assert "*" not in (g, r, v), f"wildcard in {role['metadata']['name']}"
                        granted.add((g, r, v))
    expected = {("apps", r, v) for r in ("deployments", "statefulsets")
                for v in ("get", "list", "watch")}
    expected |= {("apps", f"{r}/scale", v) for r in ("deployments", "statefulsets")
                 for v in ("get", "update", "patch")}
    expected |= {("", "pods", v) for v in ("get", "list", "watch")} | {("", "events", "create")}
    expected |= {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    assert granted == expected
    lease_role = roles[("Role", "trimtab-controller-leader")]
    assert lease_role["metadata"]["namespace"] == "trimtab"   # leases only in its namespace


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
