"""Scenario files (YAML): trace, service, replicas, SLO, cost and controller, validated eagerly."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from trimtab.common import errors
from trimtab.common.slo import SLO_TARGET, SloTarget
from trimtab.controllers.core.defaults import INTERVAL_S, MAX_REPLICAS
from trimtab.controllers.core.types import FleetBounds
from trimtab.sim.traces.config import TraceConfig


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the file, the key, the value and
    the rule."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryConfig(_Strict):
    gpu_bytes: float = Field(gt=0)
    weights_bytes: float = Field(ge=0)
    per_item_bytes: float = Field(ge=0)

    @model_validator(mode="after")
    def _weights_fit(self) -> "MemoryConfig":
        if self.weights_bytes > self.gpu_bytes:
            raise ValueError(f"weights_bytes = {self.weights_bytes:g} must be <= gpu_bytes = "
                             f"{self.gpu_bytes:g}")
        return self


class ServiceConfig(_Strict):
    model: Literal["affine", "profile"] = "affine"
    base_ms: float = Field(30.0, ge=0)
    per_item_ms: float = Field(5.0, ge=0)
    cv: float = Field(0.0, ge=0)
    dist: Literal["deterministic", "exponential", "lognormal"] | None = None
    max_batch: int = Field(1, ge=1)
    batch_timeout_ms: float = Field(0.0, ge=0)
    batching: Literal["triton", "greedy"] = "triton"
    profile_path: str | None = None
    profile_model: str | None = None
    profile_hardware: str | None = None
    default_prompt_tokens: int = Field(512, ge=1)    # when the trace has no token counts
    default_output_tokens: int = Field(128, ge=1)
    memory: MemoryConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "ServiceConfig":
        if self.model == "profile" and not self.profile_path:
            raise ValueError("profile_path is required when model = 'profile'")
        if self.model == "affine" and self.base_ms + self.per_item_ms <= 0:
            raise ValueError("base_ms + per_item_ms must be > 0 (a batch takes some time)")
        if self.dist == "deterministic" and self.cv > 0:
            raise ValueError(f"cv = {self.cv} must be 0 when dist = 'deterministic'")
        return self


class ReplicasConfig(_Strict):
    initial: int = Field(1, ge=0)
    min: int = Field(1, ge=0)
    max: int = Field(MAX_REPLICAS, ge=1)
    cold_start_s: float = Field(60.0, ge=0)
    cold_start_dist: Literal["fixed", "lognormal"] = "fixed"
    cold_start_cv: float = Field(0.3, ge=0)
    concurrency_limit: int | None = Field(None, ge=1)
    max_queue: int | None = Field(None, ge=0)
    queue_timeout_s: float | None = Field(None, gt=0)
    router: Literal["least_outstanding", "round_robin"] = "least_outstanding"
    scale_to_zero_idle_s: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> "ReplicasConfig":
        if self.min > self.max:
            raise ValueError(f"min = {self.min} must be <= max = {self.max}")
        if not self.min <= self.initial <= self.max:
            raise ValueError(f"initial = {self.initial} must be between min = {self.min} and "
                             f"max = {self.max}")
        return self


class SloConfig(_Strict):
    latency_s: float = Field(0.5, gt=0)
    target: SloTarget = SLO_TARGET


class CostConfig(_Strict):
    replica_hour: float = Field(1.0, ge=0)


class ControllerConfig(_Strict):
    interval_s: float = Field(INTERVAL_S, gt=0)
    # No scale-down until this long after the start (None: the loop's DEFAULT_WARMUP_S).
    warmup_s: float | None = Field(None, ge=0)


class Scenario(_Strict):
    """One replay setup; ``trace.path`` is relative to the scenario file."""

    name: str = Field(min_length=1)
    trace: TraceConfig
    service: ServiceConfig = ServiceConfig()
    replicas: ReplicasConfig = ReplicasConfig()
    slo: SloConfig = SloConfig()
    cost: CostConfig = CostConfig()
    controller: ControllerConfig = ControllerConfig()
    seed: int = 0                                  # service times and cold starts
    drain_s: float = Field(600.0, ge=0)            # after the last arrival, at most this long
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def with_base_dir(self, base_dir: Path) -> "Scenario":
        self._base_dir = Path(base_dir)
        return self

    def bounds(self) -> FleetBounds:
        """What every policy is told about this fleet."""
        mem = self.service.memory
        return FleetBounds(
            min_replicas=self.replicas.min, max_replicas=self.replicas.max,
            cold_start_s=self.replicas.cold_start_s, slo_latency_s=self.slo.latency_s,
            slo_target=self.slo.target, initial_replicas=self.replicas.initial,
            concurrency_limit=self.replicas.concurrency_limit,
            max_batch_size=self.service.max_batch,
            batch_timeout_ms=self.service.batch_timeout_ms,
            gpu_memory_bytes=mem.gpu_bytes if mem else None)

    def profile_path(self) -> Path | None:
        p = self.service.profile_path
        return None if p is None else (self._base_dir / p).resolve()


def scenario_from_dict(data: Any, source: str = "<scenario>", base_dir: Path | None = None
                       ) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: the top level must be a mapping of keys (name, trace, "
                            f"service, replicas, slo, cost, controller), not "
                            f"{type(data).__name__}")
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(errors.message(exc, source)) from None
    return sc.with_base_dir(base_dir or Path.cwd())


def resolve_scenario(name_or_path: str | Path | None) -> Path:
    """A scenario file, or a bundled scenario's name (``default``, ``heldout/taxi-d20``)."""
    from trimtab.sim.data import bundled_scenarios, scenario_path

    if name_or_path is None:
        return scenario_path("default")
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml") or "/" in str(name_or_path) and \
            str(name_or_path) not in bundled_scenarios():
        return path
    bundled = scenario_path(str(name_or_path))
    if not bundled.exists():
        raise ScenarioError(f"scenario {name_or_path}: no such file, and not a bundled scenario "
                            f"(bundled: {', '.join(bundled_scenarios())})")
    return bundled


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Read and validate a scenario YAML file (or a bundled one by name; none: the default);
    errors name the file, key, value and rule."""
    path = resolve_scenario(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"scenario {path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ScenarioError(f"{path}: {where}not valid YAML: "
                            f"{getattr(exc, 'problem', exc)}") from None
    return scenario_from_dict(data, str(path), path.parent.resolve())


def cold_start_sampler(sc: Scenario, rng: Any) -> Any:
    """A function drawing one cold start (s): fixed, or lognormal with the scenario's cv."""
    mean_s, cv = sc.replicas.cold_start_s, sc.replicas.cold_start_cv
    if sc.replicas.cold_start_dist == "fixed" or cv == 0 or mean_s == 0:
        return lambda: mean_s
    sigma = math.sqrt(math.log1p(cv * cv))
    mu = math.log(mean_s) - sigma * sigma / 2
    return lambda: float(rng.lognormal(mu, sigma))
