"""Replay a scenario through the production control loop: the fleet on the engine, simulated time."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from prometheus_client import CollectorRegistry

from trimtab.collectors.names import BATCH_SIZE_BUCKETS, latency_buckets_s
from trimtab.controllers.core.registry import ReplayContext, load_builtin_policies, make_policy
from trimtab.controllers.core.types import Policy
from trimtab.controllers.shell.actuators.base import WorkloadRef
from trimtab.controllers.shell.loop import DEFAULT_WARMUP_S, ControlLoop, Target, TickRecord
from trimtab.controllers.shell.metrics import ControllerMetrics
from trimtab.controllers.shell.sources.base import TargetSelector
from trimtab.sim import causal, oracle  # noqa: F401  (they register "causal" and "oracle")
from trimtab.sim.llm import dynamo_profile  # noqa: F401  (registers "dynamo": a Ray worker
                                            # that imports only the replay knows it too)
from trimtab.sim.actuator import SimActuator, SimActuatorConfig
from trimtab.sim.clock import SimClock, wall_perf_s
from trimtab.sim.engine import Engine
from trimtab.sim.fleet.model import (FAILED, NO_LIMIT, SERVED, SHED, TIMED_OUT, Fleet,
                                     FleetConfig, MemoryModel, WindowStats)
from trimtab.sim.fleet.service import AffineService, ProfileService, load_profile
from trimtab.sim.llm.fleet import (LLM_TICK_COLUMNS, LlmFleet, LlmFleetConfig,
                                   histogram_quantile, llm_requests)
from trimtab.sim.openmetrics import llm_om_row
from trimtab.sim.scenario import Scenario, ScenarioError, cold_start_sampler
from trimtab.sim.snapshot import latency_histogram, merge_windows
from trimtab.sim.source import EPS_S, IDEAL, SimSource, SimSourceConfig

# Load every registered policy now (baselines, trimtab: statsmodels and scipy, ~2 s), once per
# process at import, rather than inside the first simulate() where it would be timed as
# simulation work.
load_builtin_policies()

WORKLOAD = WorkloadRef("SimulatedFleet", "sim", "fleet")   # the one workload a replay steers

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


def build_fleet(sc: Scenario, trace: Any, engine: Engine | None = None) -> Fleet | LlmFleet:
    """The fleet a scenario describes, fed with ``trace``'s arrivals: a request-level Fleet on
    ``engine``, or (``model: llm``) an LlmFleet, which runs its own engine (``fleet.eng``)."""
    svc_rng, cs_rng = (np.random.default_rng(s)
                       for s in np.random.SeedSequence(sc.seed).spawn(2))
    s = sc.service
    if s.model == "llm":
        return build_llm_fleet(sc, trace, cold_start_sampler(sc, cs_rng))
    if engine is None:
        raise ValueError("build_fleet: a request-level fleet needs an engine")
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


def build_llm_fleet(sc: Scenario, trace: Any, cold_start: Callable[[], float],
                    record_steps: bool = False) -> LlmFleet:
    """The token-level fleet of an llm scenario (its engine per ``service.engine``)."""
    s, r = sc.service, sc.replicas
    sched = s.scheduler_config()
    try:
        requests = llm_requests(trace, sched)
    except ValueError as exc:
        raise ScenarioError(f"scenario {sc.name}: {exc}") from None
    cfg = LlmFleetConfig(
        scheduler=sched, step=sc.step_model(), cold_start=cold_start,
        initial_replicas=r.initial, concurrency_limit=r.concurrency_limit,
        max_queue=r.max_queue, queue_timeout_s=r.queue_timeout_s, router=r.router,
        engine=s.engine, seed=sc.seed)
    return LlmFleet(requests, cfg, record_steps=record_steps)


def replay_context(sc: Scenario, trace: Any) -> ReplayContext:
    """What a replay-only policy is built from: this scenario, this trace, and a way to replay
    them under another policy (the oracle plans by simulating)."""
    def run(policy: str | Policy, record_requests: bool = False) -> RunResult:
        return simulate(sc, policy, trace, record_requests=record_requests)

    return ReplayContext(scenario=sc, trace=trace, run=run)


def make_run_policy(sc: Scenario, policy: str | Policy, trace: Any) -> Policy:
    """A spec string through the registry (the replay-only ones, ``oracle`` and ``causal``,
    with this replay's context), or a Policy as is."""
    if not isinstance(policy, str):
        return policy
    return make_policy(policy, sc.bounds(trace), sc.controller.interval_s,
                       context=replay_context(sc, trace))


MAX_TICKS = 2_000_000    # a controller tick every 15 s for a year is about 2.1 million


def check_ticks(policy: str, interval_s: float, duration_s: float) -> None:
    """Refuse, before anything runs, a replay that would tick too often to finish."""
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise ScenarioError(f"policy {policy}: controller.interval_s = {interval_s}, must be a "
                            "finite number of seconds > 0")
    ticks = duration_s / interval_s
    if not ticks <= MAX_TICKS:
        raise ScenarioError(f"policy {policy}: controller.interval_s = {interval_s:g} s over a "
                            f"{duration_s:g} s trace is {ticks:.3g} ticks, over the limit of "
                            f"{MAX_TICKS:,}: raise interval_s, shorten the trace's window or "
                            "raise its time_scale")


def simulate(scenario: Scenario, policy: str | Policy, trace: Any = None, *,
             record_requests: bool = False,
             progress: Callable[[float, float], None] | None = None,
             source: SimSourceConfig = IDEAL,
             actuation: SimActuatorConfig = SimActuatorConfig()) -> RunResult:
    """Replay ``scenario`` under ``policy`` through the production ControlLoop.

    The loop gets the SimSource (``source``: what the policy sees; the default is the
    simulator's exact view), the SimActuator (``actuation``) and the simulated clock; it runs
    the policy, the safety stages and the warm-up as live. ``progress(now_s, end_s)`` is
    called every tick.
    """
    wall0 = wall_perf_s()     # only to report how long the replay took
    if trace is None:
        from trimtab.sim.traces import load_trace

        trace = load_trace(scenario.trace, scenario.base_dir)
    pol = make_run_policy(scenario, policy, trace)
    interval_s = float(pol.interval_s)
    check_ticks(pol.name, interval_s, float(trace.duration_s))
    llm = scenario.service.model == "llm"
    engine: Any = None if llm else Engine(seed=scenario.seed)
    fleet: Any = build_fleet(scenario, trace, engine)
    if llm:
        engine = fleet.eng                  # the LLM engine keeps its own time
    bounds = scenario.bounds(trace)
    actuator = SimActuator(fleet, bounds, actuation)
    slo = scenario.slo
    buckets = latency_buckets_s(tuple(b for b in (bounds.slo_latency_s, slo.ttft_s, slo.tpot_s)
                                      if b is not None))
    src = SimSource(fleet, actuator, source, buckets)
    clock = SimClock(engine)
    warmup_s = scenario.controller.warmup_s
    target = Target(WORKLOAD, TargetSelector(WORKLOAD.key, {}), pol, model=scenario.name,
                    bounds=bounds, warmup_s=DEFAULT_WARMUP_S if warmup_s is None else warmup_s)
    # A private registry per run: runs in one process (or many) never share a metric.
    loop = ControlLoop([target], src, [actuator], clock, ControllerMetrics(CollectorRegistry()),
                       interval_s=interval_s, window_s=source.rate_window_s or interval_s,
                       unix_time=clock.now_s, started_s=0.0)
    scrape_s = source.scrape_interval_s
    horizon_s = float(trace.duration_s)
    stop_s = horizon_s + scenario.drain_s
    n = len(trace.arrival_s)
    rows: dict[str, list[Any]] = {c: [] for c in TICK_COLUMNS + (LLM_TICK_COLUMNS if llm
                                                                  else ())}
    reasons: dict[str, int] = {}
    om: dict[str, list[Any]] = {}
    scrapes = 1
    k = 1
    while True:
        t = k * interval_s
        pieces = []
        while scrape_s is not None and scrapes * scrape_s <= t + EPS_S:
            engine.run(until_s=scrapes * scrape_s)
            pieces.append(src.take(scraped=True))
            scrapes += 1
        engine.run(until_s=t)
        if not pieces or pieces[-1].w.t1_s < t - EPS_S:
            pieces.append(src.take(scraped=scrape_s is None))
        records = loop.tick(t)
        if not records:
            raise RuntimeError(f"policy {pol.name}: the control loop's tick at {t:g} s failed "
                               "(the traceback is in the log)")
        (rec,) = records
        w = merge_windows([p.w for p in pieces])
        sizes = np.concatenate([p.sizes for p in pieces]) if len(pieces) > 1 else pieces[0].sizes
        _tick_row(rows, t, rec, w, fleet)
        if llm:
            _llm_tick_row(rows, w, fleet)
        reasons[rec.decision.reason] = reasons.get(rec.decision.reason, 0) + 1
        _om_row(om, w, sizes, buckets, fleet)
        if llm:
            llm_om_row(om, w, buckets)
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
    result.extra["policy_state"] = loop.states[target.key].policy_state
    result.wall_s = wall_perf_s() - wall0
    result.events = engine.events
    if record_requests:
        service_s = fleet.finish_s - fleet.start_s
        result.requests = {"arrival_s": fleet.arrival_s, "start_s": fleet.start_s,
                           "finish_s": fleet.finish_s, "outcome": fleet.outcome,
                           "replica": fleet.replica_of, "service_s": service_s}
        if llm:
            result.requests.update(
                first_token_s=fleet.first_token_s, ttft_s=fleet.ttft_s(),
                tpot_s=fleet.tpot_s(), generated=fleet.generated,
                preemptions=fleet.preemptions, prompt_tokens=fleet.requests.prompt_tokens,
                output_tokens=fleet.requests.output_tokens)
    return result


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _tick_row(rows: dict[str, list[Any]], t: float, rec: TickRecord, w: WindowStats,
              fleet: Fleet) -> None:
    """One tick's columns: what the policy saw, what was decided, the fleet after it."""
    snap, d = rec.seen, rec.decision
    lat = w.latencies_s
    lim, wait_s = fleet.limit, fleet.queue_timeout_s
    for col, val in (("time_s", t),
                     ("arrival_rate_rps", _nan(snap.arrival_rate_rps if snap else None)),
                     ("desired_replicas", fleet.desired), ("ready_replicas", fleet.n_ready),
                     ("starting_replicas", fleet.n_starting),
                     ("queue_depth", _nan(snap.queue_depth if snap else None)),
                     ("in_flight", _nan(snap.in_flight if snap else None)),
                     ("latency_p99_s", float(np.quantile(lat, 0.99)) if len(lat) else math.nan),
                     ("concurrency_limit", math.nan if lim >= NO_LIMIT else lim),
                     ("queue_timeout_s", _nan(wait_s)),
                     ("max_batch_size", fleet.max_batch),
                     ("forecast_rps", _nan(d.forecast_rps)),
                     ("reason", d.reason)):
        rows[col].append(val)


def _llm_tick_row(rows: dict[str, list[Any]], w: WindowStats, fleet: LlmFleet) -> None:
    """The llm columns (LLM_TICK_COLUMNS) of one tick, from the tick's window."""
    lw = w.llm
    for col, val in (("ttft_p99_s", _quantile(lw.ttft_s, 0.99)),
                     ("tpot_p99_s", _quantile(lw.tpot_s, 0.99)),
                     ("kv_cache_usage", fleet.kv_cache_usage(w)),
                     ("running", lw.running_now), ("waiting", lw.waiting_now)):
        rows[col].append(val)


def _quantile(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, q)) if len(x) else math.nan


def _om_row(om: dict[str, list[Any]], w: WindowStats, sizes: np.ndarray,
            buckets: tuple[float, ...], fleet: Fleet) -> None:
    """Per-tick raw counts for the OpenMetrics export (sidecar-style counters), whatever view
    the policy had."""
    idx = np.searchsorted(np.asarray(BATCH_SIZE_BUCKETS), sizes, side="left")
    mem = fleet.cfg.memory
    for key, val in (
            ("served", w.completions), ("shed", w.shed), ("timed_out", w.timed_out),
            ("failed", w.failed), ("latency_counts", latency_histogram(w.latencies_s,
                                                                       buckets).counts),
            ("latency_sum_s", float(w.latencies_s.sum())),
            ("batch_counts", np.bincount(idx, minlength=len(BATCH_SIZE_BUCKETS) + 1)),
            ("batch_sum", int(sizes.sum())),
            ("gpu_busy_ratio", w.busy_area / w.ready_area if w.ready_area > 0 else np.nan),
            ("gpu_memory_ratio", np.nan if mem is None else mem.ratio(w.max_batch_seen)),
            ("queue_depth_now", w.queue_depth_now), ("in_flight_now", w.held_now)):
        om.setdefault(key, []).append(val)


def slow_served(sc: Scenario, fleet: Any) -> np.ndarray:
    """Per served request, whether it missed a bound of the SLO: end to end over
    ``latency_s``; with an llm fleet also TTFT over ``ttft_s`` and TPOT over ``tpot_s`` (a
    request with one output token has no TPOT, so misses no TPOT bound). A bound not given
    is not checked."""
    served = fleet.outcome == SERVED
    slo = sc.slo
    miss = np.zeros(int(np.count_nonzero(served)), dtype=bool)
    if slo.latency_s is not None:
        miss |= (fleet.finish_s[served] - fleet.arrival_s[served]) > slo.latency_s
    if isinstance(fleet, LlmFleet):
        if slo.ttft_s is not None:
            miss |= fleet.ttft_s()[served] > slo.ttft_s
        if slo.tpot_s is not None:
            miss |= fleet.tpot_s()[served] > slo.tpot_s      # NaN > x is False
    return miss


def _summarize(sc: Scenario, pol: Policy, fleet: Any, act: SimActuator,
               reasons: dict[str, int], ticks: dict[str, np.ndarray]) -> RunResult:
    n = len(fleet.arrival_s)
    out = fleet.outcome
    served_mask = out == SERVED
    lat = fleet.finish_s[served_mask] - fleet.arrival_s[served_mask]
    slow = int(np.count_nonzero(slow_served(sc, fleet)))
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
    if isinstance(fleet, LlmFleet):
        summary.update(_llm_summary(fleet, served_mask))
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


def _llm_summary(fleet: LlmFleet, served: np.ndarray) -> dict[str, Any]:
    """The llm result fields. TTFT and TPOT quantiles are exact, over the served requests
    (TPOT: those with more than one output token); ITL from the engine's histogram of every
    inter-token gap (log-linear inside a bucket); token counts are the engine's counters
    (vLLM's prompt_tokens / generation_tokens: a request's prompt counts at its first token,
    each output token once); rates are over [0, the last completion]; the prefix hit rate is
    hit tokens over queried tokens (None without prefix caching)."""
    tot = fleet.totals()
    itl = fleet.itl_counts()
    tpot = fleet.tpot_s()[served]
    tpot = tpot[np.isfinite(tpot)]
    ttft = fleet.ttft_s()[served]
    end_s = float(fleet.finish_s[served].max()) if served.any() else 0.0
    queries = tot["prefix_queries"]

    def rate(x: float) -> float | None:
        return round(x / end_s, 6) if end_s > 0 else None

    def hq(q: float) -> float | None:
        v = histogram_quantile(itl, q)
        return None if math.isnan(v) else round(v, 6)

    return {
        "ttft_p50_s": _q(ttft, 0.5), "ttft_p99_s": _q(ttft, 0.99),
        "tpot_p50_s": _q(tpot, 0.5), "tpot_p99_s": _q(tpot, 0.99),
        "itl_p50_s": hq(0.5), "itl_p99_s": hq(0.99),
        "preemptions": int(tot["preemptions"]), "prompt_tokens": int(tot["prompt_tokens"]),
        "output_tokens": int(tot["output_tokens"]),
        "output_tokens_per_s": rate(float(tot["output_tokens"])),
        "throughput_rps": rate(float(np.count_nonzero(served))),
        "prefix_hit_rate": round(tot["prefix_hits"] / queries, 6) if queries else None,
    }


def _q(x: np.ndarray, q: float) -> float | None:
    return round(float(np.quantile(x, q)), 6) if len(x) else None
