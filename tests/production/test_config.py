"""Controller config: the shipped examples load; bad input names the file, key, value and rule."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from trimtab.controllers.shell.assemble import build_targets
from trimtab.controllers.shell.config import ConfigError, load_config, parse_config
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "controller.yaml"


def base() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


@pytest.mark.parametrize("path", ["examples/controller.yaml", "deploy/controller-config.yaml"])
def test_shipped_configs_load_and_build(path: str) -> None:
    cfg = load_config(REPO_ROOT / path)
    (target,) = build_targets(cfg)
    assert target.key == "models/llama"
    assert target.selector.matchers == {"namespace": "models", "model": "llama"}
    assert target.bounds.max_replicas == 8
    assert [p.name for p in target.shadows] == ["hpa", "kpa"]
    assert target.policy.name == "trimtab"


def _set(doc: dict, dotted: str, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node[p]
    node[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    return doc


BAD = [
    pytest.param("interval_s", 0, ["interval_s = 0", "greater than 0"], id="interval-zero"),
    pytest.param("prometheus.url", "prom:9090", ["prometheus.url = 'prom:9090'", "http://"],
                 id="url-scheme"),
    pytest.param("targets.0.replicas", {"min": 5, "max": 2},
                 ["targets.0.replicas", "min = 5 must be <= max = 2"], id="min-over-max"),
    pytest.param("targets.0.policy", "hpa:target", ["targets.0.policy", "key=value"],
                 id="policy-spec"),
    pytest.param("targets.0.workload.kind", "DaemonSet",
                 ["targets.0.workload.kind = 'DaemonSet'", "Deployment"], id="workload-kind"),
    pytest.param("targets.0.pod_knobs", "sidecar", ["needs a 'sidecar' section"],
                 id="sidecar-without-token"),
    pytest.param("leader_election.renew_every_s", 20, ["renew_every_s = 20.0 must be <"],
                 id="renew-after-expiry"),
    pytest.param("targets.0.slo.target", 1.5, ["targets.0.slo.target = 1.5", "less than 1"],
                 id="slo-target"),
    pytest.param("targets.0.colds_start_s", 5, ["targets.0.colds_start_s", "Extra inputs"],
                 id="typo-key"),
]


@pytest.mark.parametrize("key, value, fragments", BAD)
def test_bad_values_name_key_value_and_rule(tmp_path: Path, key, value, fragments) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_set(base(), key, value)))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg


def test_duplicate_targets_are_rejected() -> None:
    doc = base()
    doc["targets"].append(copy.deepcopy(doc["targets"][0]))
    with pytest.raises(ConfigError, match="appears twice"):
        parse_config(doc)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("interval_s: 15\ntargets:\n  - workload: {kind: Deployment\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+ is not valid YAML"):
        load_config(path)


def test_unknown_policy_is_reported_when_built(tmp_path: Path) -> None:
    cfg = parse_config(_set(base(), "targets.0.policy", "nosuch"))
    with pytest.raises(ConfigError, match="targets.0.policy = 'nosuch'.*unknown policy"):
        build_targets(cfg)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_sidecar_source_config_builds_a_direct_scrape_source() -> None:
    from trimtab.controllers.shell.assemble import build_source
    from trimtab.controllers.shell.sources.sidecar import SidecarSource

    doc = base()
    doc["source"] = "sidecar"
    with pytest.raises(ConfigError, match="needs a 'sidecar_source' section"):
        parse_config(doc)
    doc["sidecar_source"] = {"endpoints": {"models/llama": ["http://10.0.0.5:9400/metrics"]}}
    src = build_source(parse_config(doc))
    assert isinstance(src, SidecarSource)
    assert src.endpoints == {"models/llama": ["http://10.0.0.5:9400/metrics"]}


def test_metrics_listen_on_loopback_unless_told() -> None:
    """The controller's /metrics is not on every interface by default (issue 18); deploy/
    asks for the pod's address explicitly."""
    doc = yaml.safe_load((REPO_ROOT / "examples" / "controller.yaml").read_text())
    doc.pop("metrics_host", None)
    assert parse_config(doc).metrics_host == "127.0.0.1"
    deployed = yaml.safe_load((REPO_ROOT / "deploy" / "controller-config.yaml").read_text())
    assert deployed["metrics_host"] == "0.0.0.0"
