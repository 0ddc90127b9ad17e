"""Invariants of the generated rules over any valid monitoring config (hypothesis)."""
from __future__ import annotations

import re

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.alerts.alerting import all_alerts
from trimtab.alerts.config import load_config
from trimtab.alerts.promql import le_label, slo_windows
from trimtab.alerts.rulefile import dump_yaml, rule_file
from trimtab.alerts.runbook import render_runbook
from trimtab.collectors.names import latency_buckets_s

configs = st.fixed_dictionaries({
    "slo_latency_s": st.sampled_from([0.05, 0.1, 0.25, 0.3, 0.5, 0.75, 1.0, 2.0, 2.5]),
    "slo_objective": st.sampled_from([0.9, 0.95, 0.99, 0.995, 0.999]),
    "gpu_memory_ratio": st.floats(0.5, 1.0),
    "shed_ratio": st.floats(0.001, 0.5),
})


@settings(max_examples=40, deadline=None)
@given(configs)
def test_rules_follow_the_config(data: dict) -> None:
    cfg = load_config(data)
    text = dump_yaml(rule_file(cfg))
    groups = yaml.safe_load(text)["groups"]                 # what we write parses back
    exprs = "\n".join(r["expr"] for g in groups for r in g["rules"])
    # the SLO threshold is a bucket bound the sidecar exposes, spelt as client_python does
    le = le_label(cfg.slo_latency_s)
    assert f'le="{le}"' in exprs
    assert cfg.slo_latency_s in latency_buckets_s((cfg.slo_latency_s,))
    # every burn pair alerts at factor x budget, on both of its windows
    for a in all_alerts(cfg):
        if a.alert == "TrimtabErrorBudgetBurn":
            w = next(w for w in cfg.burn_windows if w.long == a.labels["long_window"])
            limits = {float(x) for x in re.findall(r"> ([0-9.e-]+)", a.expr)}
            assert limits == {round(w.factor * cfg.error_budget, 12)}
    assert len(slo_windows(cfg)) == 7
    runbook = render_runbook(cfg)
    assert all(f"## {a.alert}\n" in runbook for a in all_alerts(cfg))


@settings(max_examples=30, deadline=None)
@given(st.floats(0.001, 100.0))
def test_le_label_matches_client_python_exposition(bound_s: float) -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest
    registry = CollectorRegistry()
    Histogram("h_seconds", "h", buckets=(bound_s,), registry=registry).observe(0)
    page = generate_latest(registry).decode()
    assert f'h_seconds_bucket{{le="{le_label(bound_s)}"}}' in page
