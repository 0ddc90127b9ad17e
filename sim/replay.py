"""Replay a scenario through a policy: the fleet on the engine, a policy tick every interval."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from trimtab.collectors.names import BATCH_SIZE_BUCKETS, latency_buckets_s
from trimtab.controllers.core.registry import load_builtin_policies, make_policy
from trimtab.controllers.core.spec import parse_spec
from trimtab.controllers.core.types import Policy
from trimtab.sim.actuator import SimActuator
from trimtab.sim.clock import wall_perf_s
from trimtab.sim.engine import Engine
from trimtab.sim.fleet.model import FAILED, SERVED, SHED, TIMED_OUT, Fleet, FleetConfig, MemoryModel
from trimtab.sim.fleet.service import AffineService, ProfileService, load_profile
from trimtab.sim.scenario import Scenario, cold_start_sampler
from trimtab.sim.snapshot import build_snapshot

# Load every registered policy now (baselines, trimtab: statsmodels and scipy, ~2 s), once per
# process at import, rather than inside the first simulate() where it would be timed as
# simulation work.
load_builtin_policies()

TICK_COLUMNS = ("time_s", "arrival_rate_rps", "desired_replicas", "ready_replicas",
                "starting_replicas", "queue_depth", "in_flight", "latency_p99_s",
                "concurrency_limit", "queue_timeout_s", "max_batch_size", "forecast_rps",
                "reason")


@dataclass
class RunResult:
    """One policy's replay: the summary (the JSON result), per-tick columns, accounting."""

    summary: dict[str, Any]
    ticks: dict[str, np.ndarray]
    accounting: dict[str, float]
    requests: dict[str, np.ndarray] | None = None
    wall_s: float = 0.0
    events: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def build_fleet(sc: Scenario, trace: Any, engine: Engine) -> Fleet:
    """The fleet a scenario describes, on ``engine``, fed with ``trace``'s arrivals."""
    svc_rng, cs_rng = (np.random.default_rng(s)
                       for s in np.random.SeedSequence(sc.seed).spawn(2))
    s = sc.service
    n = len(trace.arrival_s)
    if s.model == "profile":
        table = load_profile(sc.profile_path(), s.profile_model,  # type: ignore[arg-type]
                             s.profile_hardware)
        prompt = trace.prompt_tokens if trace.prompt_tokens is not None else \
            np.full(n, s.default_prompt_tokens, dtype=np.int32)
        output = trace.output_tokens if trace.output_tokens is not None else \
            np.full(n, s.default_output_tokens, dtype=np.int32)
        service: Any = ProfileService(table, prompt, output, svc_rng, s.cv, s.dist)
    else:
        service = AffineService(s.base_ms, s.per_item_ms, svc_rng, s.cv, s.dist)
    mem = s.memory
    r = sc.replicas
    cfg = FleetConfig(
        service=service, cold_start=cold_start_sampler(sc, cs_rng),
        initial_replicas=r.initial, max_batch=s.max_batch,
        batch_timeout_s=s.batch_timeout_ms / 1000.0, greedy=s.batching == "greedy",
        concurrency_limit=r.concurrency_limit, max_queue=r.max_queue,
        queue_timeout_s=r.queue_timeout_s, router=r.router,
        scale_to_zero_idle_s=r.scale_to_zero_idle_s, max_replicas=r.max,
        memory=MemoryModel(mem.gpu_bytes, mem.weights_bytes, mem.per_item_bytes) if mem else None)
    return Fleet(engine, cfg, trace.arrival_s)


def make_run_policy(sc: Scenario, policy: str | Policy, trace: Any) -> Policy:
    """A spec string through the registry (``oracle`` through trimtab.sim.oracle), or a Policy as is."""
    if not isinstance(policy, str):
        return policy
    bounds = sc.bounds()
    if parse_spec(policy).name == "oracle":
        from trimtab.sim.oracle import make_oracle_policy   # the decision-core engineer's module

        return make_oracle_policy(sc, trace, bounds)
    return make_policy(policy, bounds, sc.controller.interval_s)


def simulate(scenario: Scenario, policy: str | Policy, trace: Any = None, *,
             record_requests: bool = False,
             progress: Callable[[float, float], None] | None = None) -> RunResult:
    """Replay ``scenario`` under ``policy``; ``progress(now_s, end_s)`` is called every tick."""
    wall0 = wall_perf_s()     # only to report how long the replay took
    if trace is None:
        from trimtab.sim.traces import load_trace

        trace = load_trace(scenario.trace, scenario.base_dir)
    pol = make_run_policy(scenario, policy, trace)
    engine = Engine(seed=scenario.seed)
    fleet = build_fleet(scenario, trace, engine)
    actuator = SimActuator(fleet, scenario.bounds())
    buckets = latency_buckets_s((scenario.slo.latency_s,))
    interval_s = float(pol.interval_s)
    if not interval_s > 0:
        raise ValueError(f"policy {pol.name}: interval_s = {interval_s}, must be > 0")
    horizon_s = float(trace.duration_s)
    stop_s = horizon_s + scenario.drain_s
    n = len(trace.arrival_s)
    rows: dict[str, list[Any]] = {c: [] for c in TICK_COLUMNS}
    reasons: dict[str, int] = {}
    om: dict[str, list[Any]] = {}
    state = pol.initial_state()
    k = 1
    while True:
        t = k * interval_s
        engine.run(until_s=t)
        w = fleet.take_window()
        snap = build_snapshot(w, bounds_s=buckets, concurrency_limit=actuator.concurrency_limit,
                              max_batch_size=fleet.max_batch,
                              batch_timeout_ms=fleet.batch_timeout_s * 1000.0,
                              memory=fleet.cfg.memory)
        decision, state = pol.decide(snap, state, t)
        reasons[decision.reason] = reasons.get(decision.reason, 0) + 1
        actuator.apply(decision)
        lat = w.latencies_s
        lim, wait_s = actuator.concurrency_limit, fleet.queue_timeout_s
        for col, val in (("time_s", t), ("arrival_rate_rps", snap.arrival_rate_rps),
                         ("desired_replicas", fleet.desired), ("ready_replicas", fleet.n_ready),
                         ("starting_replicas", fleet.n_starting),
                         ("queue_depth", snap.queue_depth), ("in_flight", snap.in_flight),
                         ("latency_p99_s", float(np.quantile(lat, 0.99)) if len(lat) else math.nan),
                         ("concurrency_limit", math.nan if lim is None else lim),
                         ("queue_timeout_s", math.nan if wait_s is None else wait_s),
                         ("max_batch_size", fleet.max_batch),
                         ("forecast_rps", math.nan if decision.forecast_rps is None
                          else decision.forecast_rps),
                         ("reason", decision.reason)):
            rows[col].append(val)
        _om_row(om, w, snap, fleet)
        if progress is not None:
            progress(min(t, horizon_s), horizon_s)
        done = fleet.n_arrived == n and fleet.in_system == 0
        if t >= horizon_s and (done or t >= stop_s):
            break
        k += 1
    ticks = {c: np.asarray(v, dtype=object if c == "reason" else float) for c, v in rows.items()}
    result = _summarize(scenario, pol, fleet, actuator, reasons, ticks)
    result.extra["om"] = {k: np.asarray(v) for k, v in om.items()}
    result.extra["latency_buckets_s"] = buckets
    result.wall_s = wall_perf_s() - wall0
    result.events = engine.events
    if record_requests:
        service_s = fleet.finish_s - fleet.start_s
        result.requests = {"arrival_s": fleet.arrival_s, "start_s": fleet.start_s,
                           "finish_s": fleet.finish_s, "outcome": fleet.outcome,
                           "replica": fleet.replica_of, "service_s": service_s}
    return result


def _om_row(om: dict[str, list[Any]], w: Any, snap: Any, fleet: Fleet) -> None:
    """Per-window raw counts for the OpenMetrics export (sidecar-style counters)."""
    sizes = fleet.last_batch_sizes
    idx = np.searchsorted(np.asarray(BATCH_SIZE_BUCKETS), sizes, side="left")
    for key, val in (
            ("served", w.completions), ("shed", w.shed), ("timed_out", w.timed_out),
            ("failed", w.failed), ("latency_counts", snap.latency.counts),
            ("latency_sum_s", float(w.latencies_s.sum())),
            ("batch_counts", np.bincount(idx, minlength=len(BATCH_SIZE_BUCKETS) + 1)),
            ("batch_sum", int(sizes.sum())), ("gpu_busy_ratio", np.nan
                                             if snap.gpu_busy_ratio is None
                                             else snap.gpu_busy_ratio),
            ("gpu_memory_ratio", np.nan if snap.gpu_memory_used_ratio is None
             else snap.gpu_memory_used_ratio),
            ("queue_depth_now", w.queue_depth_now), ("in_flight_now", w.held_now)):
        om.setdefault(key, []).append(val)


def _summarize(sc: Scenario, pol: Policy, fleet: Fleet, act: SimActuator,
               reasons: dict[str, int], ticks: dict[str, np.ndarray]) -> RunResult:
    n = len(fleet.arrival_s)
    out = fleet.outcome
    served_mask = out == SERVED
    lat = fleet.finish_s[served_mask] - fleet.arrival_s[served_mask]
    slow = int(np.count_nonzero(lat > sc.slo.latency_s))
    counts = {name: int(np.count_nonzero(out == code)) for name, code in
              (("served", SERVED), ("shed", SHED), ("timed_out", TIMED_OUT),
               ("failed", FAILED))}
    still = n - sum(counts.values())
    misses = slow + counts["shed"] + counts["timed_out"] + counts["failed"] + still
    attainment = 1.0 - misses / n if n else 1.0
    replica_hours = fleet.area_live / 3600.0
    summary: dict[str, Any] = {
        "policy": pol.name, "params": dict(pol.params),
        "slo_attainment": round(attainment, 6),
        "meets_slo": bool(attainment >= sc.slo.target),
        "latency_p50_s": _q(lat, 0.5), "latency_p99_s": _q(lat, 0.99),
        "replica_hours": round(replica_hours, 6),
        "cost": round(replica_hours * sc.cost.replica_hour, 6),
        "cold_starts": fleet.cold_starts, "scale_events": act.scale_events,
        "shed": counts["shed"], "timed_out": counts["timed_out"], "oom": fleet.oom_events,
        "failed": counts["failed"], "decisions_by_reason": dict(sorted(reasons.items())),
        "requests": n, "served": counts["served"], "still_queued": still,
        "slow": slow,
    }
    done = ~np.isnan(fleet.finish_s)
    accounting = {
        "busy_server_s": fleet.area_busy, "service_sum_s": fleet.service_sum_s,
        "n_integral_s": fleet.area_n, "queue_integral_s": fleet.area_rq,
        "response_sum_s": float(np.sum(fleet.finish_s[done] - fleet.arrival_s[done])),
        "replica_s": fleet.area_live, "end_s": fleet.eng.now, "in_system_end": fleet.in_system,
        "requests": n, "arrived": fleet.n_arrived, **{k: v for k, v in counts.items()},
        "still_queued": still, "batches": fleet.batches, "oom_events": fleet.oom_events,
    }
    return RunResult(summary=summary, ticks=ticks, accounting=accounting)


def _q(x: np.ndarray, q: float) -> float | None:
    return round(float(np.quantile(x, q)), 6) if len(x) else None
