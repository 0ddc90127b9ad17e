"""Scenario files: the contract's field names, defaults, and errors naming key, value, rule."""
from __future__ import annotations

import textwrap

import pytest

from trimtab.sim.scenario import ScenarioError, load_scenario
from tests.conftest import REPO_ROOT

GOOD = """
name: conv-steady
trace: {path: conv.csv, format: azure-llm, rate_scale: 10, time_scale: 1, jitter_s: 0.5, seed: 1}
service: {model: affine, base_ms: 30, per_item_ms: 5, cv: 0.1, max_batch: 16, batch_timeout_ms: 10}
replicas: {initial: 4, min: 1, max: 100, cold_start_s: 60, concurrency_limit: 64, queue_timeout_s: 5}
slo: {latency_s: 0.5, target: 0.99}
cost: {replica_hour: 2.5}
controller: {interval_s: 15}
"""


def write(tmp_path, text: str):
    p = tmp_path / "sc.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_the_issue_example_loads_with_its_values(tmp_path):
    sc = load_scenario(write(tmp_path, GOOD))
    assert (sc.name, sc.service.max_batch, sc.replicas.max, sc.slo.latency_s) == \
        ("conv-steady", 16, 100, 0.5)
    assert sc.base_dir == tmp_path.resolve()        # trace.path is relative to the file
    b = sc.bounds()
    assert (b.min_replicas, b.max_replicas, b.cold_start_s, b.initial_replicas) == (1, 100, 60, 4)


def test_the_default_demo_scenario_loads():
    sc = load_scenario(REPO_ROOT / "sim/data/scenarios/default.yaml")
    assert (sc.base_dir / sc.trace.path).resolve() == (REPO_ROOT / "sim/data/traces/azure_llm_conv.csv")


@pytest.mark.parametrize("old,new,needles", [
    pytest.param("min: 1, max: 100", "min: 10, max: 5", ["replicas", "min = 10", "<= max = 5"],
                 id="min-over-max"),
    pytest.param("cold_start_s: 60", "cold_start_s: -1", ["replicas.cold_start_s = -1",
                                                          "greater than or equal to 0"],
                 id="negative-cold-start"),
    pytest.param("interval_s: 15", "interval_s: 0", ["controller.interval_s = 0",
                                                     "greater than 0"], id="zero-interval"),
    pytest.param("cost: {replica_hour: 2.5}", "cost: {replica_hour: 2.5, currency: eur}",
                 ["cost.currency", "unknown key"], id="unknown-key"),
    pytest.param("name: conv-steady", "name: conv-steady\nsurprise: 1",
                 ["surprise", "unknown key"], id="unknown-top-level-key"),
    pytest.param("jitter_s: 0.5", "jitter_s: -0.5", ["trace.jitter_s", "-0.5", ">= 0"],
                 id="negative-jitter"),
    pytest.param("format: azure-llm", "format: parquet", ["trace.format", "parquet",
                                                          "known: azure-llm"],
                 id="unknown-trace-format"),
    pytest.param("target: 0.99", "target: 1.5", ["slo.target = 1.5", "less than 1"],
                 id="target-over-one"),
    pytest.param("target: 0.99", "target: 1", ["slo.target = 1", "less than 1"],
                 id="target-one-leaves-no-budget"),
    pytest.param("initial: 4", "initial: 400", ["initial = 400", "between min"],
                 id="initial-out-of-bounds"),
    pytest.param("model: affine", "model: profile", ["profile_path is required"],
                 id="profile-without-path"),
    pytest.param("max_batch: 16", "max_batch: 0", ["service.max_batch = 0"], id="zero-batch"),
    pytest.param("concurrency_limit: 64", "concurrency_limit: 0",
                 ["replicas.concurrency_limit = 0"], id="zero-concurrency"),
    pytest.param("cv: 0.1", "cv: 0.1, memory: {gpu_bytes: 10, weights_bytes: 20, "
                 "per_item_bytes: 1}", ["weights_bytes = 20", "<= gpu_bytes = 10"],
                 id="weights-larger-than-gpu"),
])
def test_bad_scenarios_name_key_value_and_rule(tmp_path, old, new, needles):
    assert old in GOOD
    p = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ScenarioError) as err:
        load_scenario(p)
    msg = str(err.value)
    assert str(p) in msg
    for needle in needles:
        assert needle in msg, msg


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = write(tmp_path, "name: x\ntrace: {path: [\n")
    with pytest.raises(ScenarioError, match=r"line \d+, column \d+"):
        load_scenario(p)


def test_missing_file_and_wrong_top_level(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ScenarioError, match="top level must be a mapping"):
        load_scenario(write(tmp_path, "- 1\n- 2\n"))
