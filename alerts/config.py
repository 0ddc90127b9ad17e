"""The one monitoring config (selectors, SLO, thresholds, runbook URL) that alerts and dashboards share."""
from __future__ import annotations

import re
import urllib.parse
import warnings
from typing import Any

from pydantic import (AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from trimtab.collectors import names as n
from trimtab.common import errors
from trimtab.common.slo import SLO_TARGET, SloTarget

# The old spelling of slo_target, still read (tests/observability use it), with a warning.
DEPRECATED_SLO_KEY = "slo_objective"


class ConfigError(ValueError):
    """Monitoring config that breaks a rule; the message names the key, the value and the rule."""


class BurnWindow(BaseModel):
    """One multi-window multi-burn-rate pair (Google SRE workbook, 30-day objective)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    severity: str            # critical (page) or warning (ticket)
    long: str                # PromQL duration, e.g. "1h"
    short: str
    factor: float = Field(gt=0)
    for_: str = Field(alias="for")


DEFAULT_BURN_WINDOWS: tuple[BurnWindow, ...] = (
    BurnWindow(severity="critical", long="1h", short="5m", factor=14.4, **{"for": "2m"}),
    BurnWindow(severity="critical", long="6h", short="30m", factor=6, **{"for": "15m"}),
    BurnWindow(severity="warning", long="1d", short="2h", factor=3, **{"for": "1h"}),
    BurnWindow(severity="warning", long="3d", short="6h", factor=1, **{"for": "3h"}),
)


# One PromQL label matcher: a label name, an operator, a double-quoted string (escapes allowed).
_MATCHER = re.compile(r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*')


def check_matchers(value: str) -> str:
    """``value`` as comma-separated PromQL label matchers (``job=~".*trimtab.*",ns="a"``), or
    a ValueError naming the first part that is not one (an unbalanced quote, say), so promtool
    never sees it."""
    pos = 0
    while True:
        m = _MATCHER.match(value, pos)
        if m is None:
            raise ValueError(f"not label matchers at character {pos + 1} ({value[pos:pos + 20]!r}): "
                             'write name="value" (or !=, =~, !~), comma-separated, each value '
                             "in double quotes")
        pos = m.end()
        if pos == len(value):
            return value
        if value[pos] != ",":
            raise ValueError(f"not label matchers at character {pos + 1} "
                             f"({value[pos:pos + 20]!r}): matchers are separated by commas")
        pos += 1


def check_url(value: str) -> str:
    """``value`` as an http(s) URL with a host, or a ValueError (Alertmanager refuses others)."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace()
                                                                          for c in value):
        raise ValueError(f"{value!r} is not an http(s) URL with a host, e.g. "
                         "http://alert-receiver:9095/pager")
    return value


class MonitoringConfig(BaseModel):
    """Selectors, SLO and thresholds; every PromQL string in alerts/ and dashboards/ reads these.

    ``sidecar_selector`` and ``controller_selector`` are label matchers (without braces) that
    pick trimtab's own scrape jobs, so ``up`` and friends never match somebody else's target.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sidecar_selector: str = 'job=~".*trimtab.*"'
    controller_selector: str = 'job=~".*trimtab.*"'
    slo_latency_s: float = Field(0.5, gt=0)
    slo_target: SloTarget = Field(SLO_TARGET, validation_alias=AliasChoices(
        "slo_target", DEPRECATED_SLO_KEY))
    # LLM targets (per request, read from the engine's own histograms): time to first token
    # and time per output token, each a bound and the share of requests that must meet it.
    # A bound must be a bucket bound of the engine's histogram (names.py: vLLM's, SGLang's).
    slo_ttft_s: float = Field(1.0, gt=0)
    slo_ttft_target: SloTarget = SLO_TARGET
    slo_tpot_s: float = Field(0.1, gt=0)
    slo_tpot_target: SloTarget = SLO_TARGET
    burn_windows: tuple[BurnWindow, ...] = DEFAULT_BURN_WINDOWS
    # Thresholds.
    shed_ratio: float = Field(0.01, gt=0, lt=1)
    queue_backlog_requests: float = Field(10, ge=0)
    gpu_memory_ratio: float = Field(0.95, gt=0, le=1)
    controller_stall_s: float = Field(120, gt=0)
    forecast_error_ratio: float = Field(0.5, gt=0)
    kv_cache_usage_ratio: float = Field(0.9, gt=0, le=1)   # an LLM engine's KV cache
    preemptions_per_s: float = Field(0.0, ge=0)           # sustained above this: alert
    # Where alerts lead.
    runbook_base_url: str = "https://github.com/trimtab/trimtab/blob/main/alerts/runbook.md"
    pager_webhook_url: str = "http://127.0.0.1:9095/pager"
    ticket_webhook_url: str = "http://127.0.0.1:9095/tickets"

    @model_validator(mode="before")
    @classmethod
    def _old_slo_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and DEPRECATED_SLO_KEY in data:
            if "slo_target" in data:
                raise ValueError(f"{DEPRECATED_SLO_KEY} and slo_target both given: write only "
                                 "slo_target (slo_objective is its deprecated old name)")
            warnings.warn(f"monitoring config: {DEPRECATED_SLO_KEY} is deprecated, write "
                          "slo_target (same meaning: the share of requests within "
                          "slo_latency_s)", DeprecationWarning, stacklevel=2)
        return data

    @field_validator("sidecar_selector", "controller_selector")
    @classmethod
    def _no_braces(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError("must be label matchers without braces, e.g. job=\"trimtab\"")
        return check_matchers(value)

    @field_validator("slo_ttft_s", "slo_tpot_s")
    @classmethod
    def _engine_bound(cls, value: float, info: Any) -> float:
        return n.check_llm_bound(value, info.field_name.removeprefix("slo_").removesuffix("_s"))

    @field_validator("runbook_base_url", "pager_webhook_url", "ticket_webhook_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @model_validator(mode="after")
    def _has_windows(self) -> "MonitoringConfig":
        if not self.burn_windows:
            raise ValueError("burn_windows must hold at least one window pair")
        return self

    @property
    def error_budget(self) -> float:
        """Allowed bad fraction, e.g. 0.01 for a 99 % objective."""
        return round(1.0 - self.slo_target, 12)

    def budget_of(self, target: float) -> float:
        """Allowed bad fraction of ``target`` (the TTFT and TPOT objectives have their own)."""
        return round(1.0 - target, 12)

    def runbook_url(self, alertname: str) -> str:
        return f"{self.runbook_base_url}#{alertname.lower()}"


def load_config(data: dict | None = None) -> MonitoringConfig:
    """Validate ``data`` (e.g. parsed YAML) into a config; errors name key, value and rule."""
    try:
        return MonitoringConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(errors.message(exc, "monitoring config", top="<config>")) from None


DEFAULT_CONFIG = MonitoringConfig()
