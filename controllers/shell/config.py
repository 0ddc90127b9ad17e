"""The controller's YAML config, validated with pydantic; errors name the key, the value and the rule."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from trimtab.collectors import names as n
from trimtab.common import errors
from trimtab.common.slo import SLO_TARGET, SloTarget
from trimtab.common.strict import StrictModel
from trimtab.common.yamlfile import YamlFileError, read_yaml
from trimtab.controllers.core.defaults import INTERVAL_S, MAX_REPLICAS
from trimtab.controllers.core.spec import SpecError, parse_spec
from trimtab.controllers.core.types import FleetBounds


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, key, value and rule."""


class _Strict(StrictModel):          # unknown keys and inf/nan refused; frozen
    model_config = ConfigDict(frozen=True)


class WorkloadConfig(_Strict):
    kind: Literal["Deployment", "StatefulSet"] = "Deployment"
    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)


class TokenSlo(_Strict):
    """One per-request LLM objective: a bound and the share of requests that must meet it
    (the attainment), e.g. ``{bound_s: 1.0, target: 0.99}``: 99 % of first tokens within 1 s.
    The bound must be a bucket bound of the engine's histogram (collectors/names.py), where the
    sidecar reads it exactly."""

    bound_s: float = Field(gt=0)
    target: SloTarget = SLO_TARGET


class TtftSlo(TokenSlo):
    @field_validator("bound_s")
    @classmethod
    def _engine_bound(cls, value: float) -> float:
        return n.check_llm_bound(value, "ttft")


class TpotSlo(TokenSlo):
    @field_validator("bound_s")
    @classmethod
    def _engine_bound(cls, value: float) -> float:
        return n.check_llm_bound(value, "tpot")


class SloConfig(_Strict):
    """``latency_s`` end to end; an LLM target may add ``ttft`` (time to first token) and
    ``tpot`` (time per output token after the first), beside or instead of it (a policy
    that plans for end-to-end latency still reads ``latency_s``)."""

    latency_s: float = Field(0.5, gt=0)
    target: SloTarget = SLO_TARGET
    ttft: TtftSlo | None = None
    tpot: TpotSlo | None = None


class ReplicaBounds(_Strict):
    min: int = Field(1, ge=0)
    max: int = Field(MAX_REPLICAS, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "ReplicaBounds":
        if self.min > self.max:
            raise ValueError(f"min = {self.min} must be <= max = {self.max}")
        return self


class SidecarKnobs(_Strict):
    """Where the sidecars' control API listens and the token that opens it."""

    admin_port: int = Field(9400, ge=1, le=65535)
    token_file: str = Field(min_length=1)
    timeout_s: float = Field(2.0, gt=0, le=30)


class TargetConfig(_Strict):
    workload: WorkloadConfig
    model: str = Field("default", min_length=1)
    matchers: dict[str, str] = Field(default_factory=dict)
    policy: str = "trimtab"
    shadow_policies: list[str] = Field(default_factory=list)
    slo: SloConfig = SloConfig()
    replicas: ReplicaBounds = ReplicaBounds()
    cold_start_s: float = Field(60.0, gt=0)
    pod_knobs: Literal["none", "sidecar"] = "none"
    sidecar: SidecarKnobs | None = None
    # No scale-down this long after the controller starts, so windows fill first.
    warmup_s: float | None = Field(None, ge=0)

    @field_validator("policy", "shadow_policies")
    @classmethod
    def _spec_parses(cls, value: str | list[str]) -> str | list[str]:
        for spec in [value] if isinstance(value, str) else value:
            try:
                parse_spec(spec)
            except SpecError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _knobs_need_sidecar(self) -> "TargetConfig":
        if self.pod_knobs == "sidecar" and self.sidecar is None:
            raise ValueError("pod_knobs = 'sidecar' needs a 'sidecar' section (token_file)")
        return self

    @property
    def key(self) -> str:
        return f"{self.workload.namespace}/{self.workload.name}"

    def effective_matchers(self) -> dict[str, str]:
        """Label matchers for this target's series; defaults to its namespace and model."""
        return self.matchers or {"namespace": self.workload.namespace, "model": self.model}

    def bounds(self) -> FleetBounds:
        return FleetBounds(min_replicas=self.replicas.min, max_replicas=self.replicas.max,
                           cold_start_s=self.cold_start_s, slo_latency_s=self.slo.latency_s,
                           slo_target=self.slo.target, initial_replicas=self.replicas.min,
                           slo_ttft_s=self.slo.ttft.bound_s if self.slo.ttft else None,
                           slo_tpot_s=self.slo.tpot.bound_s if self.slo.tpot else None)


class PrometheusConfig(_Strict):
    url: str = "http://127.0.0.1:9090"
    timeout_s: float = Field(5.0, gt=0, le=60)
    staleness_s: float = Field(60.0, gt=0)
    window_s: float = Field(60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class SidecarSourceConfig(_Strict):
    """Direct scrape of sidecars, for small setups without Prometheus: target key -> URLs."""

    endpoints: dict[str, list[str]]
    timeout_s: float = Field(2.0, gt=0, le=30)


class LeaderElectionConfig(_Strict):
    enabled: bool = False
    namespace: str = "trimtab"
    lease_name: str = "trimtab-controller"
    lease_duration_s: float = Field(15.0, gt=0)
    renew_every_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _renew_inside_lease(self) -> "LeaderElectionConfig":
        if self.renew_every_s >= self.lease_duration_s:
            raise ValueError(f"renew_every_s = {self.renew_every_s} must be < lease_duration_s"
                             f" = {self.lease_duration_s}")
        return self


class ControllerConfig(_Strict):
    interval_s: float = Field(INTERVAL_S, gt=0)
    source: Literal["prometheus", "sidecar"] = "prometheus"
    prometheus: PrometheusConfig = PrometheusConfig()
    sidecar_source: SidecarSourceConfig | None = None
    kubeconfig: str | None = None     # None: in-cluster config, else this file
    leader_election: LeaderElectionConfig = LeaderElectionConfig()
    # /metrics: loopback unless told (a pod sets 0.0.0.0 for Prometheus, see deploy/).
    metrics_host: str = Field("127.0.0.1", min_length=1)
    metrics_port: int = Field(9464, ge=0, le=65535)
    pause_annotation: str = "trimtab.io/paused"
    targets: list[TargetConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_and_sourced(self) -> "ControllerConfig":
        seen: set[str] = set()
        for t in self.targets:
            if t.key in seen:
                raise ValueError(f"targets: workload {t.key!r} appears twice; keys must be unique")
            seen.add(t.key)
        if self.source == "sidecar" and self.sidecar_source is None:
            raise ValueError("source = 'sidecar' needs a 'sidecar_source' section")
        return self


def parse_config(data: object, where: str = "config") -> ControllerConfig:
    try:
        return ControllerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(f"{where}: {p}" for p in errors.problems(exc))) from None


def load_config(path: str | Path) -> ControllerConfig:
    """Read and validate a YAML file; every problem is reported, naming file, key, value, rule."""
    p = Path(path)
    try:
        data = read_yaml(p)
    except YamlFileError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return parse_config(data, str(p))
