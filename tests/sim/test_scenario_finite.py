"""Issue 18 (8): ``.inf``, ``-.inf`` and ``.nan`` in any float key of a scenario are refused at
load, naming the file, the key and the rule (they were accepted for cold_start_s, base_ms, the
SLO, the cost and drain_s)."""
from __future__ import annotations

import copy

import pytest
import yaml

from trimtab.sim.scenario import ScenarioError, load_scenario

AFFINE = {
    "name": "finite",
    "trace": {"format": "poisson", "rate_rps": 5, "duration_s": 60},
    "service": {"model": "affine", "base_ms": 30, "per_item_ms": 5, "cv": 0.1, "max_batch": 4,
                "batch_timeout_ms": 10},
    "replicas": {"initial": 1, "min": 1, "max": 4, "cold_start_s": 60, "cold_start_cv": 0.3,
                 "queue_timeout_s": 5},
    "slo": {"latency_s": 0.5, "target": 0.99},
    "cost": {"replica_hour": 2.5},
    "controller": {"interval_s": 15},
}
LLM = {
    "name": "finite-llm",
    "trace": {"format": "poisson", "rate_rps": 1, "duration_s": 60,
              "lengths": {"path": "traces/azure_llm_conv.csv"}},
    "service": {"model": "llm", "profile": "llama2-70b-a100-tp2",
                "memory": {"gpu_bytes": 80e9, "weights_bytes": 40e9, "kv_bytes_per_token": 1000}},
    "slo": {"ttft_s": 2.0, "tpot_s": 0.2},
}
# Each float key, and the base it applies to (a key absent from the base is added).
KEYS = [
    (AFFINE, "service.base_ms"), (AFFINE, "service.per_item_ms"), (AFFINE, "service.cv"),
    (AFFINE, "service.batch_timeout_ms"),
    (AFFINE, "service.memory"),                       # a whole section: see MEMORY below
    (AFFINE, "replicas.cold_start_s"), (AFFINE, "replicas.cold_start_cv"),
    (AFFINE, "replicas.queue_timeout_s"), (AFFINE, "replicas.scale_to_zero_idle_s"),
    (AFFINE, "slo.latency_s"), (AFFINE, "slo.target"), (AFFINE, "cost.replica_hour"),
    (AFFINE, "controller.interval_s"), (AFFINE, "controller.warmup_s"), (AFFINE, "drain_s"),
    (AFFINE, "trace.rate_scale"), (AFFINE, "trace.jitter_s"), (AFFINE, "trace.duration_s"),
    (LLM, "slo.ttft_s"), (LLM, "slo.tpot_s"), (LLM, "service.memory.gpu_bytes"),
    (LLM, "service.memory.weights_bytes"), (LLM, "service.memory.gpu_memory_utilization"),
]
MEMORY = {"gpu_bytes": 80e9, "weights_bytes": 1e9, "per_item_bytes": "__X__"}
LITERALS = [".inf", "-.inf", ".nan", ".Inf", "-.INF", ".NaN"]


def _doc(base: dict, dotted: str) -> str:
    doc = copy.deepcopy(base)
    *parents, leaf = dotted.split(".")
    node = doc
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = copy.deepcopy(MEMORY) if leaf == "memory" else "__X__"
    return yaml.safe_dump(doc, default_flow_style=True)


@pytest.mark.parametrize("literal", LITERALS)
@pytest.mark.parametrize("base,key", KEYS, ids=[f"{b['name']}-{k}" for b, k in KEYS])
def test_a_non_finite_value_is_refused_naming_the_key_and_the_rule(tmp_path, base, key, literal):
    path = tmp_path / "sc.yaml"
    path.write_text(_doc(base, key).replace("__X__", literal).replace("'", ""))
    field = "service.memory.per_item_bytes" if key == "service.memory" else key
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    text = str(info.value)
    assert str(path) in text
    assert f"{field} = " in text
    assert "must be a finite number" in text


@pytest.mark.parametrize("base", [AFFINE, LLM], ids=["affine", "llm"])
def test_the_bases_load(tmp_path, base):
    """The table's counterfactual: each base scenario loads as it is."""
    path = tmp_path / "sc.yaml"
    path.write_text(yaml.safe_dump(base))
    assert load_scenario(path).name == base["name"]
