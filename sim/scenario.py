"""Scenario files (YAML): trace, service, replicas, SLO, cost and controller, validated eagerly."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from trimtab.common import errors
from trimtab.common.slo import SLO_TARGET, SloTarget
from trimtab.common.strict import StrictModel
from trimtab.common.yamlfile import YamlFileError, read_yaml
from trimtab.controllers.core.defaults import INTERVAL_S, MAX_REPLICAS
from trimtab.controllers.core.types import FleetBounds
from trimtab.sim.llm.profile import num_blocks_for
from trimtab.sim.llm.types import SchedulerConfig, StepModel
from trimtab.sim.traces.config import LENGTH_FORMATS, TraceConfig


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the file, the key, the value and
    the rule."""


_Strict = StrictModel        # unknown keys and inf/nan refused in every section


class MemoryConfig(_Strict):
    """One replica's GPU memory. Request-level models: the weights plus ``per_item_bytes`` per
    batch item must fit. ``model: llm``: the KV cache gets what the weights leave of
    ``gpu_bytes * gpu_memory_utilization`` (all of the replica's GPUs), in blocks of
    ``kv_bytes_per_token * block_size`` bytes (vLLM's sizing, ``num_blocks_for``)."""

    gpu_bytes: float = Field(gt=0)
    weights_bytes: float = Field(ge=0)
    per_item_bytes: float | None = Field(None, ge=0)
    kv_bytes_per_token: int | None = Field(None, ge=1)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _weights_fit(self) -> "MemoryConfig":
        if self.weights_bytes > self.gpu_bytes:
            raise ValueError(f"weights_bytes = {self.weights_bytes:g} must be <= gpu_bytes = "
                             f"{self.gpu_bytes:g}")
        return self


_SCHED = SchedulerConfig()          # the engine's defaults, written once in sim/llm/types.py
GPU_MEMORY_UTILIZATION = 0.9        # vLLM's --gpu-memory-utilization default


class LlmSchedulerConfig(_Strict):
    """One LLM replica's engine settings (``trimtab.sim.llm.types.SchedulerConfig``, vLLM's
    names); ``num_blocks`` may be left out when ``service.memory`` gives the figures to derive
    it from, and overrides them when given (vLLM's ``--num-gpu-blocks-override``)."""

    max_num_seqs: int = Field(_SCHED.max_num_seqs, ge=1)
    max_num_batched_tokens: int = Field(_SCHED.max_num_batched_tokens, ge=1)
    chunked_prefill: bool = _SCHED.chunked_prefill
    block_size: int = Field(_SCHED.block_size, ge=1)
    num_blocks: int | None = Field(None, ge=1)
    prefix_caching: bool = _SCHED.prefix_caching


# Service keys of the request-level models, refused with ``model: llm`` (its step time comes
# from the profile, its batching from the scheduler), and the llm-only keys refused otherwise.
_REQUEST_LEVEL_KEYS = ("base_ms", "per_item_ms", "cv", "dist", "max_batch", "batch_timeout_ms",
                       "batching", "profile_path", "profile_model", "profile_hardware",
                       "default_prompt_tokens", "default_output_tokens")
_LLM_KEYS = ("profile", "scheduler", "engine")


class ServiceConfig(_Strict):
    model: Literal["affine", "profile", "llm"] = "affine"
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
    # model: llm (a token-level engine per replica, trimtab.sim.llm).
    profile: str | None = None               # a bundled step-time profile's name, or a path
    scheduler: LlmSchedulerConfig | None = None
    engine: Literal["compiled", "reference"] = "compiled"

    @model_validator(mode="after")
    def _consistent(self) -> "ServiceConfig":
        if self.model == "llm":
            return self._llm_consistent()
        given = sorted(k for k in _LLM_KEYS if k in self.model_fields_set)
        if given:
            raise ValueError(f"{given[0]} applies to model 'llm' only (model = {self.model!r})")
        mem = self.memory
        if mem is not None:
            if mem.per_item_bytes is None:
                raise ValueError(f"memory.per_item_bytes is required for model {self.model!r}")
            for k in ("kv_bytes_per_token", "gpu_memory_utilization"):
                if getattr(mem, k) is not None:
                    raise ValueError(f"memory.{k} applies to model 'llm' only (model = "
                                     f"{self.model!r}; it uses per_item_bytes)")
        if self.model == "profile" and not self.profile_path:
            raise ValueError("profile_path is required when model = 'profile'")
        if self.model == "affine" and self.base_ms + self.per_item_ms <= 0:
            raise ValueError("base_ms + per_item_ms must be > 0 (a batch takes some time)")
        if self.dist == "deterministic" and self.cv > 0:
            raise ValueError(f"cv = {self.cv} must be 0 when dist = 'deterministic'")
        return self

    def _llm_consistent(self) -> "ServiceConfig":
        given = sorted(k for k in _REQUEST_LEVEL_KEYS if k in self.model_fields_set)
        if given:
            raise ValueError(f"{given[0]} does not apply to model 'llm' (its step time comes "
                             "from service.profile, its batching from service.scheduler)")
        if not self.profile:
            raise ValueError("profile is required when model = 'llm' (a bundled profile's "
                             "name, e.g. llama2-70b-a100-tp2, or a path to a profile file)")
        mem = self.memory
        if mem is not None:
            if mem.per_item_bytes is not None:
                raise ValueError("memory.per_item_bytes does not apply to model 'llm' (the KV "
                                 "cache is sized from kv_bytes_per_token)")
            if mem.kv_bytes_per_token is None:
                raise ValueError("memory.kv_bytes_per_token is required for model 'llm' (with "
                                 "gpu_bytes and weights_bytes it sizes the KV cache)")
        if self.scheduler is None:
            self.scheduler = LlmSchedulerConfig()
        if self.scheduler.num_blocks is None and mem is None:
            raise ValueError("scheduler.num_blocks is required for model 'llm' unless memory "
                             "{gpu_bytes, weights_bytes, kv_bytes_per_token} is given to "
                             "derive it")
        self.scheduler_config()             # derives num_blocks now: its errors at load
        return self

    def scheduler_config(self) -> SchedulerConfig:
        """The engine's SchedulerConfig; ``num_blocks`` as given, else derived from memory."""
        sch = self.scheduler or LlmSchedulerConfig()
        num_blocks = sch.num_blocks
        if num_blocks is None:
            mem = self.memory
            assert mem is not None and mem.kv_bytes_per_token is not None
            util = mem.gpu_memory_utilization or GPU_MEMORY_UTILIZATION
            try:
                num_blocks = num_blocks_for(int(mem.gpu_bytes), int(mem.weights_bytes),
                                            mem.kv_bytes_per_token, sch.block_size, util)
            except ValueError as exc:
                raise ValueError(f"memory: no KV blocks derivable: {exc}") from None
        return SchedulerConfig(
            max_num_seqs=sch.max_num_seqs, max_num_batched_tokens=sch.max_num_batched_tokens,
            chunked_prefill=sch.chunked_prefill, block_size=sch.block_size,
            num_blocks=num_blocks, prefix_caching=sch.prefix_caching)


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
    # prefix_aware: model 'llm' only (the replica caching the longest prefix, load-balanced).
    router: Literal["least_outstanding", "round_robin", "prefix_aware"] = "least_outstanding"
    scale_to_zero_idle_s: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> "ReplicasConfig":
        if self.min > self.max:
            raise ValueError(f"min = {self.min} must be <= max = {self.max}")
        if not self.min <= self.initial <= self.max:
            raise ValueError(f"initial = {self.initial} must be between min = {self.min} and "
                             f"max = {self.max}")
        return self


SLO_LATENCY_S = 0.5     # the request-level models' end-to-end bound when none is given


class SloConfig(_Strict):
    """A request meets the SLO when it meets every bound given (shed, timed out, failed or
    unfinished: a miss). ``latency_s`` is end to end (the request-level models' one bound,
    SLO_LATENCY_S when not given); ``ttft_s`` (time to first token) and ``tpot_s`` (time per
    output token after the first) apply to model 'llm' only."""

    latency_s: float | None = Field(None, gt=0)
    ttft_s: float | None = Field(None, gt=0)
    tpot_s: float | None = Field(None, gt=0)
    target: SloTarget = SLO_TARGET


class CostConfig(_Strict):
    replica_hour: float = Field(1.0, ge=0)


class ControllerConfig(_Strict):
    interval_s: float = Field(INTERVAL_S, gt=0)
    # No scale-down until this long after the start (None: the loop's DEFAULT_WARMUP_S).
    warmup_s: float | None = Field(None, ge=0)


class Scenario(_Strict):
    """One replay setup; ``trace.path`` is relative to the scenario file, whose stem is the
    ``name`` when none is given."""

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
    _policy_latency_s: float | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _combinations(self) -> "Scenario":
        llm = self.service.model == "llm"
        r, slo = self.replicas, self.slo
        if not llm:
            for k in ("ttft_s", "tpot_s"):
                if getattr(slo, k) is not None:
                    raise ValueError(f"slo.{k} applies to service.model 'llm' only (model = "
                                     f"{self.service.model!r}: latency_s is its bound)")
            if r.router == "prefix_aware":
                raise ValueError("replicas.router = 'prefix_aware' needs service.model 'llm' "
                                 "(prefix caches live in the LLM engine)")
            if slo.latency_s is None:
                self.slo = slo.model_copy(update={"latency_s": SLO_LATENCY_S})
            return self
        if r.scale_to_zero_idle_s is not None:
            raise ValueError("replicas.scale_to_zero_idle_s does not apply to service.model "
                             "'llm' (its replicas do not park; scale with replicas.min = 0)")
        if r.router == "round_robin":
            raise ValueError("replicas.router = 'round_robin' does not apply to service.model "
                             "'llm'; use least_outstanding or prefix_aware")
        sched = self.service.scheduler
        if r.router == "prefix_aware" and not (sched is not None and sched.prefix_caching):
            raise ValueError("replicas.router = 'prefix_aware' needs "
                             "service.scheduler.prefix_caching: true (no cache, no prefix)")
        if self.trace.format not in LENGTH_FORMATS and self.trace.lengths is None:
            raise ValueError(f"service.model 'llm' needs token counts: trace.format = "
                             f"{self.trace.format!r} has none; give trace.lengths {{path, "
                             "format}} or an azure-llm or mooncake trace")
        if slo.latency_s is None and slo.tpot_s is None:
            raise ValueError("slo: service.model 'llm' needs latency_s or tpot_s (with ttft_s "
                             "optional): the policies are told an end-to-end latency, "
                             "latency_s or else ttft_s + tpot_s x the median output tokens")
        return self

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def with_base_dir(self, base_dir: Path) -> "Scenario":
        self._base_dir = Path(base_dir)
        return self

    def bounds(self, trace: Any = None) -> FleetBounds:
        """What every policy is told about this fleet (an llm fleet: its batch cap is
        ``max_num_seqs``, no batch timeout, no memory-per-item model)."""
        mem = self.service.memory
        llm = self.service.model == "llm"
        return FleetBounds(
            min_replicas=self.replicas.min, max_replicas=self.replicas.max,
            cold_start_s=self.replicas.cold_start_s,
            slo_latency_s=self.policy_latency_s(trace),
            slo_target=self.slo.target, initial_replicas=self.replicas.initial,
            slo_ttft_s=self.slo.ttft_s if llm else None,
            slo_tpot_s=self.slo.tpot_s if llm else None,
            concurrency_limit=self.replicas.concurrency_limit,
            max_batch_size=(self.service.scheduler.max_num_seqs  # type: ignore[union-attr]
                            if llm else self.service.max_batch),
            batch_timeout_ms=0.0 if llm else self.service.batch_timeout_ms,
            gpu_memory_bytes=mem.gpu_bytes if mem and not llm else None)

    def policy_latency_s(self, trace: Any = None) -> float:
        """The end-to-end latency bound the policies steer to: ``slo.latency_s`` when given;
        an llm scenario without it: ``ttft_s + tpot_s x`` the median output tokens of its trace
        (``ttft_s`` 0 when not given), e.g. 2.0 + 0.2 x 129 = 27.8 s. The trace is loaded
        once when not passed."""
        if self.slo.latency_s is not None:
            return self.slo.latency_s
        if trace is None:
            if self._policy_latency_s is None:
                from trimtab.sim.traces import load_trace

                self._policy_latency_s = self.policy_latency_s(
                    load_trace(self.trace, self.base_dir))
            return self._policy_latency_s
        out = trace.output_tokens
        median = float(np.median(np.maximum(out, 1))) if out is not None and len(out) else 1.0
        return (self.slo.ttft_s or 0.0) + self.slo.tpot_s * median  # type: ignore[operator]

    def step_model(self) -> StepModel:
        """The llm service's step-time model: its bundled or file profile."""
        from trimtab.sim.llm.profile import load_step_model

        try:
            return load_step_model(self.service.profile, self.base_dir)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ScenarioError(f"scenario {self.name}: service.profile = "
                                f"{self.service.profile!r}: {exc}") from None

    def profile_path(self) -> Path | None:
        p = self.service.profile_path
        return None if p is None else (self._base_dir / p).resolve()


def scenario_from_dict(data: Any, source: str = "<scenario>", base_dir: Path | None = None
                       ) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: the top level must be a mapping of keys (name, trace, "
                            f"service, replicas, slo, cost, controller), not "
                            f"{type(data).__name__}")
    if "name" not in data and source != "<scenario>":
        data = {"name": Path(source).stem, **data}     # a file's scenario is named by default
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(errors.message(exc, source)) from None
    sc = sc.with_base_dir(base_dir or Path.cwd())
    if sc.service.model == "llm":
        try:
            sc.step_model()                  # a missing or bad profile fails at load
        except ScenarioError as exc:
            raise ScenarioError(f"{source}: {exc}") from None
    return sc


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
        data = read_yaml(path)
    except YamlFileError as exc:
        raise ScenarioError(f"scenario {exc}") from None
    return scenario_from_dict(data, str(path), path.parent.resolve())


def cold_start_sampler(sc: Scenario, rng: Any) -> Any:
    """A function drawing one cold start (s): fixed, or lognormal with the scenario's cv."""
    mean_s, cv = sc.replicas.cold_start_s, sc.replicas.cold_start_cv
    if sc.replicas.cold_start_dist == "fixed" or cv == 0 or mean_s == 0:
        return lambda: mean_s
    sigma = math.sqrt(math.log1p(cv * cv))
    mu = math.log(mean_s) - sigma * sigma / 2
    return lambda: float(rng.lognormal(mu, sigma))
