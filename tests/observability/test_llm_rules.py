"""The TTFT and TPOT objectives, KV-cache pressure and preemptions in the monitoring config and
the rules built from it (issue 16); promtool runs their cases with the others."""
from __future__ import annotations

import re

import pytest

from trimtab.alerts import promql as q
from trimtab.alerts.alerting import all_alerts
from trimtab.alerts.config import ConfigError, load_config
from trimtab.alerts.recording import recording_groups
from trimtab.collectors import names as n


def _exprs(cfg) -> str:
    rules = [r.expr for g in recording_groups(cfg).values() for r in g]
    return "\n".join(rules + [a.expr for a in all_alerts(cfg)])


@pytest.mark.parametrize("key, value", [("slo_ttft_s", 1.5), ("slo_tpot_s", 0.06)])
def test_a_bound_between_engine_buckets_is_refused_naming_key_and_choices(key, value):
    with pytest.raises(ConfigError) as err:
        load_config({key: value})
    text = str(err.value)
    assert key in text and f"{value:g} s is no bucket bound" in text
    assert "vLLM:" in text and "SGLang:" in text


@pytest.mark.parametrize("key, value, engine", [
    ("slo_ttft_s", 2.5, "both"), ("slo_ttft_s", 30.0, "SGLang only"),
    ("slo_tpot_s", 0.075, "both"), ("slo_tpot_s", 0.015, "SGLang only")])
def test_an_engine_bound_is_read_at_its_bucket(key, value, engine):
    cfg = load_config({key: value})
    slo = "ttft" if key == "slo_ttft_s" else "tpot"
    metric = q.LLM_SLOS[slo]
    sli = q.llm_slo_error_ratio(cfg, slo, "5m")
    assert f'{metric}_bucket{{{cfg.sidecar_selector}, le="{q.le_label(value)}"}}' in sli, engine


@pytest.mark.parametrize("slo, target_key", [("ttft", "slo_ttft_target"),
                                             ("tpot", "slo_tpot_target")])
def test_each_llm_burn_pair_alerts_at_factor_times_its_own_budget(slo, target_key):
    cfg = load_config({target_key: 0.95, "slo_target": 0.999})
    burns = [a for a in all_alerts(cfg) if a.alert == f"Trimtab{slo.upper()}BudgetBurn"]
    assert {a.labels["long_window"] for a in burns} == {w.long for w in cfg.burn_windows}
    for a in burns:
        w = next(w for w in cfg.burn_windows if w.long == a.labels["long_window"])
        limits = {float(x) for x in re.findall(r"> ([0-9.e-]+)", a.expr)}
        assert limits == {round(w.factor * 0.05, 12)}      # 0.95's budget, not 0.999's
        assert q.llm_slo_error_ratio_name(slo, w.short) in a.expr


def test_kv_cache_and_preemption_thresholds_come_from_the_config():
    cfg = load_config({"kv_cache_usage_ratio": 0.8, "preemptions_per_s": 0.5})
    by_name = {a.alert: a for a in all_alerts(cfg)}
    assert by_name["TrimtabKVCachePressure"].expr == f"{q.KV_CACHE_USAGE_MAX} > 0.8"
    assert by_name["TrimtabLLMPreempting"].expr == f"{q.PREEMPTIONS_RATE} > 0.5"
    exprs = _exprs(cfg)
    assert f"max by (namespace, model) ({n.KV_CACHE_USAGE}{{" in exprs
    assert q.series(n.LLM_PREEMPTIONS) in exprs


def test_every_llm_window_is_recorded_for_both_objectives():
    cfg = load_config({})
    records = {r.record for g in recording_groups(cfg).values() for r in g}
    for slo in q.LLM_SLOS:
        assert {q.llm_slo_error_ratio_name(slo, w) for w in q.slo_windows(cfg)} <= records
        assert q.llm_p99_name(slo) in records


def test_a_target_that_cannot_be_scraped_silences_its_ttft_and_tpot_burns():
    from trimtab.alerts.alertmanager import alertmanager_config
    inhibit = next(r for r in alertmanager_config(load_config({}))["inhibit_rules"]
                   if r["source_matchers"] == ['alertname="TrimtabTargetDown"'])
    pattern = re.fullmatch(r'alertname=~"(.+)"', inhibit["target_matchers"][0]).group(1)
    for alert in ("TrimtabTTFTBudgetBurn", "TrimtabTPOTBudgetBurn"):
        assert re.fullmatch(pattern, alert)
    assert not re.fullmatch(pattern, "TrimtabKVCachePressure")
