"""``trimtab sim validate``: the real engine (trimtab.sim.replay.simulate) against queueing theory.

Each model case is a Scenario built in code with a ``poisson`` trace and a ``static`` policy,
replayed with ``record_requests=True`` for several seeds. Per-customer values (waits, response
times, indicators) after a 5 % warm-up are cut into batch means; the estimate is their mean and
its standard error is their spread / sqrt(count). Full run: 1M customers per seed, 5 seeds, pass
within 2 %. Quick run: 40k customers, 3 seeds, pass within max(4 SE, 0.5 %) (the tolerance
shown). Invariant checks (Little, work conservation, accounting, Kiefer–Wolfowitz / Lindley)
must hold to 1e-9 on every run.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from trimtab.sim import queueing as qt
from trimtab.sim.validate_cases import CASES, Case, Check, trace_invariants

WARMUP_FRACTION = 0.05
BATCHES_PER_SEED = 10
FULL_TOLERANCE = 0.02
EXACT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Plan:
    customers: int
    seeds: int
    quick: bool

    @staticmethod
    def of(quick: bool) -> "Plan":
        return Plan(40_000, 3, True) if quick else Plan(1_000_000, 5, False)


@dataclass
class CaseRun:
    """What one seed of one case gives back: batch means per metric, and exact-check results."""

    batch_means: dict[str, np.ndarray] = field(default_factory=dict)
    exact: list[Check] = field(default_factory=list)


def run_case(case: Case, seed: int, customers: int) -> CaseRun:
    """Replay one case for one seed and reduce the per-customer records to batch means."""
    from trimtab.sim.replay import simulate

    sc = case.scenario(customers, seed)
    result = simulate(sc, f"static:replicas={case.servers}", record_requests=True)
    req = result.requests
    assert req is not None
    out = CaseRun()
    n = len(req["arrival_s"])
    first = int(n * WARMUP_FRACTION)
    for metric in case.metrics:
        values = metric.values(req)[first:]
        usable = len(values) // BATCHES_PER_SEED * BATCHES_PER_SEED
        out.batch_means[metric.name] = values[:usable].reshape(BATCHES_PER_SEED, -1).mean(axis=1)
    if case.recursion and seed == 0:
        out.exact.append(_recursion_check(case, req))
    return out


def _recursion_check(case: Case, req: dict[str, np.ndarray]) -> Check:
    """Kiefer–Wolfowitz (c servers) or Lindley (one) on the engine's own arrival and service
    streams: every customer's wait must match to 1e-9 s."""
    arrival, service = req["arrival_s"], req["service_s"]
    waits = req["start_s"] - arrival
    if case.servers == 1:
        oracle, label = qt.lindley_waits(arrival, service), "Lindley"
    else:
        oracle, label = qt.kiefer_wolfowitz_waits(arrival, service, case.servers), \
            "Kiefer-Wolfowitz"
    diff = float(np.max(np.abs(oracle - waits))) if len(waits) else 0.0
    return Check(f"{label} c={case.servers}: max |Wq engine - Wq recursion| (s)",
                 theory=0.0, simulated=diff, rel_error=diff, tolerance=EXACT_TOLERANCE,
                 passed=diff <= EXACT_TOLERANCE,
                 detail=f"{len(waits)} customers, mean Wq {float(np.mean(waits)):.6g} s")


def _combine(case: Case, runs: list[CaseRun], plan: Plan) -> list[Check]:
    checks: list[Check] = []
    for metric in case.metrics:
        means = np.concatenate([r.batch_means[metric.name] for r in runs])
        estimate = float(means.mean())
        se = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) > 1 else math.inf
        theory = metric.theory
        rel = abs(estimate - theory) / abs(theory)
        tol = max(4 * se / abs(theory), 0.005) if plan.quick else FULL_TOLERANCE
        checks.append(Check(f"{case.name}: {metric.label}", theory, estimate, rel, tol,
                            rel <= tol, se,
                            f"{plan.seeds} seeds x {plan.customers} customers"))
    for r in runs:
        checks.extend(r.exact)
    return checks


def _jobs(plan: Plan, cases: Iterable[Case]) -> list[tuple[Case, int, int]]:
    return [(case, seed, plan.customers) for case in cases for seed in range(plan.seeds)]


def _run_job(job: tuple[Case, int, int]) -> CaseRun:
    return run_case(*job)


def run_validation(quick: bool = False, workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   cases: list[Case] | None = None) -> list[Check]:
    """Every check; ``workers`` processes (default: one per CPU for the full run, 1 quick)."""
    plan = Plan.of(quick)
    cases = CASES if cases is None else cases
    jobs = _jobs(plan, cases)
    if workers is None:
        workers = 1 if quick else max(1, os.cpu_count() or 1)
    results: list[CaseRun] = []
    if workers == 1:
        for i, job in enumerate(jobs):
            results.append(_run_job(job))
            if progress:
                progress(i + 1, len(jobs) + 1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for i, res in enumerate(pool.map(_run_job, jobs)):
                results.append(res)
                if progress:
                    progress(i + 1, len(jobs) + 1)
    checks: list[Check] = []
    for k, case in enumerate(cases):
        checks.extend(_combine(case, results[k * plan.seeds:(k + 1) * plan.seeds], plan))
    checks.extend(trace_invariants(quick, EXACT_TOLERANCE))
    checks.extend(llm_checks(quick))
    if progress:
        progress(len(jobs) + 1, len(jobs) + 1)
    return checks


def llm_checks(quick: bool) -> list[Check]:
    """The LLM engine's degenerate cases with a closed form, on the compiled engine the
    replay runs: one output token and one sequence at a time is an M/G/1 queue (and M/D/1
    with one prompt length); a fixed set of decode-only sequences steps at a fixed period."""
    from trimtab.sim.llm.closed_form import fixed_decode_check, mg1_check
    from trimtab.sim.llm.core import CompiledFleet

    n = 12_000 if quick else 200_000
    checks: list[Check] = []
    for res in (mg1_check(CompiledFleet, n=n),
                mg1_check(CompiledFleet, n=n, prompt_values=(512,), prompt_probs=None),
                fixed_decode_check(CompiledFleet)):
        checks.extend(Check(**row) for row in res["checks"])
    return checks


def check_json(check: Check) -> dict[str, Any]:
    """A check as JSON: non-finite numbers become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(check).items()}


def write_json(checks: list[Check], path: Path) -> None:
    import json

    path.write_text(json.dumps({"checks": [check_json(c) for c in checks]}, indent=2) + "\n")
