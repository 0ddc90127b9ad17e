"""Generate the promtool unit-test file from alerts/testcases.py and the shipped rules."""
from __future__ import annotations

import re
from typing import Any

from trimtab.alerts.alerting import AlertRule, all_alerts
from trimtab.alerts.config import MonitoringConfig
from trimtab.alerts.promql import duration_s
from trimtab.alerts.testcases import AlertCase, RecordCase, alert_cases, record_cases

RULE_FILE = "trimtab-rules.yaml"
TEST_FILE = "trimtab-rules.test.yaml"
LONG_TEST_FILE = "trimtab-rules.long.test.yaml"
_LONG_RECORD_TESTS = ("recording slo", "recording llm slo")
EVAL_INTERVAL_MIN = 1
_LABEL_REF = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")


def expand(template: str, labels: dict[str, str]) -> str:
    """What Prometheus renders for ``{{ $labels.x }}`` (the only template our annotations use)."""
    return _LABEL_REF.sub(lambda m: labels.get(m.group(1), ""), template)


def _minutes(duration: str) -> int:
    return int(duration_s(duration) // 60)


def _expected_alert(rule: AlertRule, case: AlertCase, cfg: MonitoringConfig) -> dict[str, Any]:
    labels = {**case.labels, "severity": rule.severity, **rule.labels}
    return {
        "exp_labels": labels,
        "exp_annotations": {
            "summary": expand(rule.summary, labels),
            "description": expand(rule.description, labels),
            "runbook_url": cfg.runbook_url(rule.alert),
        },
    }


def _fires_at(rule: AlertRule, case: AlertCase) -> int:
    return case.onset_min + _minutes(rule.for_)


def alert_test(case: AlertCase, rules: list[AlertRule], cfg: MonitoringConfig) -> dict:
    """Each rule one interval before it may fire (nothing) and one after (exactly the firing)."""
    times = sorted({t for r in rules
                    for t in (_fires_at(r, case) - EVAL_INTERVAL_MIN,
                              _fires_at(r, case) + EVAL_INTERVAL_MIN)})
    checks = []
    for t in times:
        firing = [r for r in rules if _fires_at(r, case) <= t]
        checks.append({"eval_time": f"{t}m", "alertname": case.alert,
                       "exp_alerts": [_expected_alert(r, case, cfg) for r in firing]})
    return {"name": f"alert {case.alert}", "interval": f"{case.step_min}m",
            "input_series": [{"series": k, "values": v} for k, v in case.series],
            "alert_rule_test": checks}


def _labels_text(record: str, labels: dict[str, str]) -> str:
    return record + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def record_test(case: RecordCase) -> dict:
    return {"name": f"recording {case.name}", "interval": f"{case.step_min}m",
            "input_series": [{"series": k, "values": v} for k, v in case.series],
            "promql_expr_test": [
                {"expr": record, "eval_time": f"{case.eval_min}m",
                 "exp_samples": [{"labels": _labels_text(record, labels), "value": value}
                                 for labels, value in samples]}
                for record, samples in case.expected.items()]}


def promtool_test_files(cfg: MonitoringConfig) -> dict[str, dict[str, Any]]:
    """Two files: alerts and short-window rules every minute; long-window rules every hour.

    The 3-day SLO windows evaluated every minute for 3 days would cost ~30 s of promtool time;
    hourly evaluation gives the same values at the 3-day mark (a multiple of the hour).
    """
    fast = promtool_test_file(cfg)
    long_cases = [t for t in fast["tests"] if t["name"] in _LONG_RECORD_TESTS]
    fast["tests"] = [t for t in fast["tests"] if t["name"] not in _LONG_RECORD_TESTS]
    return {TEST_FILE: fast,
            LONG_TEST_FILE: {"rule_files": [RULE_FILE], "evaluation_interval": "1h",
                             "tests": long_cases}}


def promtool_test_file(cfg: MonitoringConfig) -> dict[str, Any]:
    by_name: dict[str, list[AlertRule]] = {}
    for rule in all_alerts(cfg):
        by_name.setdefault(rule.alert, []).append(rule)
    cases = {c.alert: c for c in alert_cases(cfg)}
    missing = sorted(set(by_name) - set(cases))
    if missing:
        raise ValueError(f"alerts/testcases.py: no promtool case for alerts {missing}")
    return {
        "rule_files": [RULE_FILE],
        "evaluation_interval": f"{EVAL_INTERVAL_MIN}m",
        "tests": [*(record_test(c) for c in record_cases(cfg)),
                  *(alert_test(cases[name], rules, cfg) for name, rules in by_name.items())],
    }
