"""Serialise recording and alerting rules into a Prometheus rule file (dict, then YAML)."""
from __future__ import annotations

from typing import Any

import yaml

from trimtab.alerts.alerting import AlertRule, alert_groups
from trimtab.alerts.config import MonitoringConfig
from trimtab.alerts.recording import recording_groups


def _alert_dict(rule: AlertRule, cfg: MonitoringConfig, for_override: str | None) -> dict:
    return {
        "alert": rule.alert,
        "expr": rule.expr,
        "for": for_override or rule.for_,
        "labels": {"severity": rule.severity, **rule.labels},
        "annotations": {
            "summary": rule.summary,
            "description": rule.description,
            "runbook_url": cfg.runbook_url(rule.alert),
        },
    }


def rule_file(cfg: MonitoringConfig, for_override: str | None = None,
              interval: str | None = None) -> dict[str, Any]:
    """The whole rule file. ``for_override``/``interval`` exist for live tests only (same exprs)."""
    groups: list[dict[str, Any]] = []
    for name, rules in recording_groups(cfg).items():
        groups.append({"name": name, "rules": [{"record": r.record, "expr": r.expr}
                                               for r in rules]})
    for name, alerts in alert_groups(cfg).items():
        groups.append({"name": name,
                       "rules": [_alert_dict(a, cfg, for_override) for a in alerts]})
    if interval:
        for g in groups:
            g["interval"] = interval
    return {"groups": groups}


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so PromQL stays readable in the committed file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(data: Any, header: str = "") -> str:
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=10_000, allow_unicode=True)
    return header + body
