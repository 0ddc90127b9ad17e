"""Alertmanager config: critical pages, warning tickets, info nowhere; grouping and inhibitions."""
from __future__ import annotations

from typing import Any

from trimtab.alerts.config import MonitoringConfig

PAGER = "pager"
TICKETS = "tickets"
NOWHERE = "null"
GROUP_BY = ["namespace", "model", "alertname"]
LATENCY_ALERTS = ("TrimtabLatencyP99OverSLO", "TrimtabErrorBudgetBurn", "TrimtabTTFTBudgetBurn",
                  "TrimtabTPOTBudgetBurn")


def alertmanager_config(cfg: MonitoringConfig, pager_url: str | None = None,
                        ticket_url: str | None = None,
                        group_wait: str = "30s", group_interval: str = "5m",
                        repeat_interval: str = "4h") -> dict[str, Any]:
    """The config as a dict. URLs and timings are parameters so live tests can shorten them."""
    return {
        "route": {
            "receiver": NOWHERE,
            "group_by": GROUP_BY,
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
            "routes": [
                {"receiver": PAGER, "matchers": ['severity="critical"']},
                {"receiver": TICKETS, "matchers": ['severity="warning"']},
                # info (and anything unlabelled) falls through to the root: nowhere.
                {"receiver": NOWHERE, "matchers": ['severity="info"']},
            ],
        },
        "inhibit_rules": [
            {   # a critical alert silences warnings about the same model
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["namespace", "model"],
            },
            {   # a target that cannot be scraped has no trustworthy latency
                "source_matchers": ['alertname="TrimtabTargetDown"'],
                "target_matchers": [f'alertname=~"{"|".join(LATENCY_ALERTS)}"'],
                "equal": ["namespace", "model"],
            },
        ],
        "receivers": [
            {"name": PAGER, "webhook_configs": [
                {"url": pager_url or cfg.pager_webhook_url, "send_resolved": True}]},
            {"name": TICKETS, "webhook_configs": [
                {"url": ticket_url or cfg.ticket_webhook_url, "send_resolved": True}]},
            {"name": NOWHERE},
        ],
    }
