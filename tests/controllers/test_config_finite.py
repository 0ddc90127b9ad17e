"""Issue 18 (8): ``.inf``, ``-.inf`` and ``.nan`` in any float key of the controller config are
refused at load, naming the file, the key and the rule (``interval_s: .inf`` was accepted)."""
from __future__ import annotations

import copy

import pytest
import yaml

from trimtab.controllers.shell.config import ConfigError, load_config
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "controller.yaml"
SIDECARS = {"sidecar": {"token_file": "/t"}, "pod_knobs": "sidecar"}
KEYS = [
    "interval_s", "prometheus.timeout_s", "prometheus.staleness_s", "prometheus.window_s",
    "sidecar_source.timeout_s", "leader_election.lease_duration_s",
    "leader_election.renew_every_s", "targets.0.slo.latency_s", "targets.0.slo.target",
    "targets.0.cold_start_s", "targets.0.warmup_s", "targets.0.sidecar.timeout_s",
]
LITERALS = [".inf", "-.inf", ".nan", ".Inf", "-.INF", ".NaN"]


def _doc(dotted: str) -> str:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["sidecar_source"] = {"endpoints": {"models/llama": ["http://a:9400"]}}
    doc["targets"][0].update(copy.deepcopy(SIDECARS))
    *parents, leaf = dotted.split(".")
    node = doc
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    node[leaf] = "__X__"
    return yaml.safe_dump(doc, default_flow_style=True)


@pytest.mark.parametrize("literal", LITERALS)
@pytest.mark.parametrize("key", KEYS)
def test_a_non_finite_value_is_refused_naming_the_key_and_the_rule(tmp_path, key, literal):
    path = tmp_path / "controller.yaml"
    path.write_text(_doc(key).replace("__X__", literal))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert f"{path}: {key} = " in text
    assert "must be a finite number" in text


def test_the_base_loads(tmp_path):
    """The table's counterfactual: the base, with every section the keys live in, loads."""
    path = tmp_path / "controller.yaml"
    path.write_text(_doc("interval_s").replace("__X__", "15"))
    assert load_config(path).interval_s == 15
