"""keda-vllm (KEDA's Prometheus scaler on vLLM's waiting requests) against KServe's own docs
and sources, and the registry's LLM-only rule that keeps it to LLM scenarios.

kserve/website docs/model-serving/generative-inference/autoscaling/autoscaling.md (the worked
examples), kserve pkg/controller/v1beta1/inferenceservice/reconcilers/keda/keda_reconciler.go
(an External metric becomes a prometheus trigger: query and threshold, no metricType) and the
vLLM production stack's KEDA tutorial (docs.vllm.ai production-stack use_cases/autoscaling-keda).
"""
from __future__ import annotations

import math

import pytest

from trimtab.controllers.core import registry
from trimtab.controllers.core.baselines import keda
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.spec import parse_spec
from trimtab.controllers.core.types import FIELD_LLM, REASON_HOLD_MISSING
from tests.controllers.builders import bounds, snap


def _pol(spec: str = "keda-vllm", **kw):
    return make_policy(spec, bounds(**kw), 15.0)


def test_preset_is_kserves_recipe():
    # KServe (RHOAI guide): query vllm:num_requests_waiting, target Value 2; keda_reconciler.go
    # writes threshold "2.000000" and no metricType, so KEDA's AverageValue applies; KServe
    # sets no pollingInterval/cooldownPeriod: KEDA's 30 s and 300 s.
    c = _pol().config
    assert (c.metric, c.threshold) == ("vllm_waiting", 2.0)
    assert (c.polling_interval_s, c.cooldown_s) == (30.0, 300.0)


# (doc example, queue summed over the fleet, threshold, replicas now, expected)
WORKED = [
    # autoscaling.md: "if our LLM receives 6 concurrent requests with our target of 2
    # requests per pod, the system will scale to 3 replicas".
    ("6 requests, target 2 -> 3 replicas", 6.0, 2, 1, 3),
    # autoscaling.md (OpenTelemetry): "the workload suddenly increases to 12 concurrent
    # requests, the system will quickly scale to 3 replicas" with target 4.
    ("12 requests, target 4 -> 3 replicas", 12.0, 4, 1, 3),
    # production-stack tutorial: threshold 5, "0/5 (avg)" at one replica: no change.
    ("0/5 (avg): stays at 1", 0.0, 5, 1, 1),
]


@pytest.mark.parametrize("waiting,threshold,current,expected", [c[1:] for c in WORKED],
                         ids=[c[0] for c in WORKED])
def test_documented_examples(waiting, threshold, current, expected):
    pol = _pol(f"keda-vllm:threshold={threshold}")
    d, _ = pol.decide(snap(ready=current, engine_waiting=waiting), pol.initial_state(), 15.0)
    assert d.valid and d.replicas == expected


def test_reads_the_last_scrape_not_a_range():
    # An instant query on a gauge: the value is this scrape's, whatever came before (a range
    # mean over 60 s would give (0 * 45 + 16 * 15) / 60 = 4, i.e. 2 replicas). 16 / 2 = 8,
    # limited by the HPA's default scale-up (100 % or 4 pods a period, the larger): 6.
    pol = _pol(max_replicas=20)
    state = pol.initial_state()
    for t, w in [(15, 0.0), (30, 0.0), (45, 0.0), (60, 16.0)]:
        d, state = pol.decide(snap(t_s=t, ready=2, engine_waiting=w), state, float(t))
    assert d.details["query_value"] == 16.0 and d.replicas == 6


def test_a_failed_llm_query_holds():
    # The LLM group unread (the query failed): a scaler error, the HPA's metric fails.
    pol = _pol()
    s = snap(ready=3, engine_waiting=None, missing=frozenset({FIELD_LLM}))
    d, _ = pol.decide(s, pol.initial_state(), 15.0)
    assert not d.valid and d.replicas == 3 and d.reason == REASON_HOLD_MISSING


def test_a_non_finite_value_is_zero_with_ignore_null_values():
    # prometheus_scaler.go: NaN read as 0 (ignoreNullValues true): 4 replicas at 0 waiting
    # want ceil(0 / 2) = 0 -> the minimum, held by the HPA's scale-down stabilisation.
    pol = _pol()
    d, _ = pol.decide(snap(ready=4, engine_waiting=math.nan), pol.initial_state(), 15.0)
    assert d.valid and d.details["query_value"] == 0.0 and d.replicas == 4


def test_llm_only_names_apply_only_to_llm_fleets():
    registry.load_builtin_policies()
    assert "keda-vllm" in registry.LLM_ONLY and "keda-vllm" in registry.known_policies()
    assert registry.applies("keda-vllm", llm=True)
    assert not registry.applies("keda-vllm", llm=False)
    assert registry.applies("keda", llm=False) and registry.applies("keda", llm=True)


def _scenario(name: str):
    from trimtab.sim.scenario import load_scenario
    from trimtab.sim.data import scenario_path

    return load_scenario(scenario_path(name))


class _Trace:
    import numpy as np

    arrival_s = np.arange(0.0, 600.0, 0.5)
    output_tokens = np.full(len(arrival_s), 100)
    prompt_tokens = np.full(len(arrival_s), 500)


def test_default_policies_by_scenario_kind():
    from trimtab.sim.cli import default_policies

    req = default_policies(_scenario("default"), _Trace())
    assert "keda" in req and not any(parse_spec(s).name in registry.LLM_ONLY
                                      for s in req)
    llm = default_policies(_scenario("llm-azure-conv"), _Trace())
    assert "keda-vllm" in llm and "keda" in llm and any(s.startswith("static:") for s in llm)


def test_all_expands_to_the_defaults_and_keeps_the_others():
    from trimtab.sim.cli import default_policies

    sc = _scenario("llm-azure-conv")
    assert default_policies(sc, _Trace(), ["all"]) == default_policies(sc, _Trace())
    both = default_policies(sc, _Trace(), ["hpa:target=4", "all"])
    assert both[0] == "hpa:target=4" and "keda-vllm" in both
    assert default_policies(sc, _Trace(), ["hpa"]) == ["hpa"]


def test_sweep_lists_the_threshold():
    from trimtab.controllers.core.sweep import SWEEPS

    assert "keda-vllm:threshold=2" in SWEEPS["keda-vllm"]
    for spec in SWEEPS["keda-vllm"]:
        _pol(spec)          # every swept setting builds
