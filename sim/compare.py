"""Scenarios under every policy; each baseline at its defaults, carried over, and in hindsight.

The comparison an operator would make (``trimtab replay --sweep``): a baseline at its documented
defaults (``tuning: "default"``); at the setting an operator carries over from the other
scenarios of the set (leave one out: the cheapest setting of its sweep that meets the SLO on all
the others, ``"carried_over"``; only with two scenarios or more); tuned in hindsight on this very
trace (the cheapest of its sweep meeting the SLO here, ``"hindsight"``); beside them the oracle
and the past-only bound (``trimtab causal``: the cheapest schedule knowing the past exactly).

Jobs (one replay each) run on local processes, or on Ray with ``ray_address``; a replay is
deterministic, so both give identical results (tests/sim/test_compare.py). To Ray each scenario
and its trace is shipped once (``ray.put``), each task gets that reference and a spec string,
and sends back the replay's RunResult (summary and per-tick columns, not per-request arrays).
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from trimtab.controllers.core.spec import SpecError, parse_spec
from trimtab.sim.causal import WINDOWS_TICKS

TUNING_DEFAULT, TUNING_CARRIED, TUNING_HINDSIGHT = "default", "carried_over", "hindsight"
PAST_ONLY_SPECS = tuple(f"causal:window={w}" for w in WINDOWS_TICKS)


@dataclass
class Case:
    """One scenario of the set, loaded: its policies and each baseline's sweep."""

    scenario: Any
    trace: Any
    specs: list[str]                              # the policies as run (defaults or given)
    hindsight_specs: frozenset[str] = frozenset()   # specs sized on this trace (auto static)
    sweeps: dict[str, list[str]] = field(default_factory=dict)   # baseline -> its settings
    bounds: bool = False                          # the oracle beside the results
    past_only: bool = False                       # ... and the past-only bound

    def jobs(self) -> list[str]:
        """Every replay this case needs, each once, in a stable order."""
        out = list(self.specs)
        for group in self.sweeps.values():
            out += [s for s in group if s not in out]
        if self.bounds or self.past_only:
            out.append("oracle")
        if self.past_only:
            out += list(PAST_ONLY_SPECS)
        return out


def scenario_paths(given: Sequence[Path]) -> list[Path | None]:
    """The scenarios named: files as given, a folder as its ``*.yaml`` files (sorted, not
    recursive); none given means the bundled demo (``None``)."""
    out: list[Path | None] = []
    for p in given:
        if p.is_dir():
            found = sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml"))
            if not found:
                from trimtab.sim.scenario import ScenarioError

                raise ScenarioError(f"{p}: a folder with no scenario (*.yaml) in it")
            out += found
        else:
            out.append(p)
    return out or [None]


def baseline_of(spec: str) -> str:
    return parse_spec(spec).name


def candidates(case: Case, name: str) -> list[str]:
    """A baseline's settings: its sweep, and the specs it was run with (its defaults)."""
    own = [s for s in case.specs if baseline_of(s) == name and s not in case.sweeps[name]]
    return own + list(case.sweeps[name])


# -- running jobs -------------------------------------------------------------------------------

_CASES: list[tuple[Any, Any]] = []    # (scenario, trace) per case, shared with forked workers


def run_job(scenario: Any, trace: Any, spec: str) -> Any:
    """One replay, or None for a past-only window that no load factor meets the SLO with."""
    from trimtab.sim.replay import simulate

    try:
        return simulate(scenario, spec, trace)
    except SpecError:
        if spec.startswith("causal:"):
            return None
        raise


def _local_job(job: tuple[int, str]) -> tuple[tuple[int, str], Any]:
    i, spec = job
    sc, trace = _CASES[i]
    return job, run_job(sc, trace, spec)


def run_jobs(cases: Sequence[Case], jobs: Sequence[tuple[int, str]], workers: int,
             ray_address: str | None = None,
             done: Callable[[], None] = lambda: None) -> dict[tuple[int, str], Any]:
    """Every job's result keyed by (case index, spec): on Ray when ``ray_address`` is given
    (``local`` starts a private Ray on this machine), else on ``workers`` local processes."""
    if ray_address is not None:
        return _run_ray(cases, jobs, ray_address, workers, done)
    global _CASES
    _CASES = [(c.scenario, c.trace) for c in cases]
    results: dict[tuple[int, str], Any] = {}
    try:
        if workers > 1 and len(jobs) > 1:
            ctx = multiprocessing.get_context("fork")   # the traces reach workers unpickled
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for job, res in pool.map(_local_job, jobs):
                    results[job] = res
                    done()
        else:
            for job in jobs:
                results[job] = _local_job(job)[1]
                done()
    finally:
        _CASES = []
    return results


def _ray_task(ctx: tuple[Any, Any], spec: str) -> Any:
    return run_job(ctx[0], ctx[1], spec)


def _run_ray(cases: Sequence[Case], jobs: Sequence[tuple[int, str]], address: str,
             workers: int, done: Callable[[], None]) -> dict[tuple[int, str], Any]:
    import ray

    started = not ray.is_initialized()
    if started:
        if address == "local":
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(_ray_task)
        refs = [ray.put((c.scenario, c.trace)) for c in cases]
        pending = {task.remote(refs[i], spec): (i, spec) for i, spec in jobs}
        results: dict[tuple[int, str], Any] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                results[pending.pop(ref)] = ray.get(ref)
                done()
        return results
    finally:
        if started:
            ray.shutdown()


# -- choosing settings --------------------------------------------------------------------------

def _summary(results: dict[tuple[int, str], Any], i: int, spec: str) -> dict[str, Any] | None:
    res = results.get((i, spec))
    return None if res is None else res.summary


def hindsight(results: dict[tuple[int, str], Any], i: int, specs: Iterable[str]
              ) -> str | None:
    """The cheapest setting meeting the SLO on case ``i`` itself (None when none does)."""
    ok = [(s["cost"], k, spec) for k, spec in enumerate(specs)
          if (s := _summary(results, i, spec)) is not None and s["meets_slo"]]
    return min(ok)[2] if ok else None


def carried_over(results: dict[tuple[int, str], Any], i: int, n: int, specs: Iterable[str]
                 ) -> tuple[str, int] | None:
    """Leave one out: the setting meeting the SLO on the most cases other than ``i`` (all of
    them, where any does), the cheapest over those cases among equals; with how many it met.
    None with fewer than two cases."""
    others = [j for j in range(n) if j != i]
    if not others:
        return None
    best: tuple[int, float, int, str] | None = None
    for k, spec in enumerate(specs):
        runs = [_summary(results, j, spec) for j in others]
        if any(r is None for r in runs):
            continue
        met = sum(bool(r["meets_slo"]) for r in runs)   # type: ignore[index]
        cost = sum(r["cost"] for r in runs)               # type: ignore[index]
        key = (-met, cost, k, spec)
        if best is None or key < best:
            best = key
    return None if best is None else (best[3], -best[0])


def assemble(cases: Sequence[Case], results: dict[tuple[int, str], Any], names: Sequence[str]
             ) -> list[dict[str, Any]]:
    """Each case's document: today's ``{"scenario", "requests", "results", "oracle"}`` with a
    ``tuning`` on every result and ``past_only`` beside the oracle."""
    from trimtab.sim.report import results_json

    n = len(cases)
    docs = []
    for i, case in enumerate(cases):
        main: list[dict[str, Any]] = []
        for spec in case.specs:
            tuning = TUNING_HINDSIGHT if spec in case.hindsight_specs else TUNING_DEFAULT
            main.append(results[(i, spec)].summary | {"tuning": tuning})
        for name in case.sweeps:
            specs = candidates(case, name)
            carried = carried_over(results, i, n, specs)
            if carried is not None:
                spec, met = carried
                main.append(results[(i, spec)].summary | {
                    "tuning": TUNING_CARRIED, "carried_from": [
                        cases[j].scenario.name for j in range(n) if j != i],
                    "carried_met_slo_on": met})
            best = hindsight(results, i, specs)
            if best is not None:
                main.append(results[(i, best)].summary | {"tuning": TUNING_HINDSIGHT})
        oracle = _summary(results, i, "oracle") if case.bounds or case.past_only else None
        past = past_only(results, i) if case.past_only else None
        for r in main + ([past] if past else []):
            if oracle is not None and oracle.get("cost"):
                r["cost_vs_oracle"] = round(r["cost"] / oracle["cost"], 4)
        doc = results_json(case.scenario.name, len(case.trace.arrival_s), main, oracle)
        if case.past_only:
            doc["past_only"] = past
        docs.append(doc)
    return docs


def past_only(results: dict[tuple[int, str], Any], i: int) -> dict[str, Any] | None:
    """The cheapest past-only schedule meeting the SLO over the windows tried (None if none)."""
    best = hindsight(results, i, PAST_ONLY_SPECS)
    return None if best is None else dict(results[(i, best)].summary)
