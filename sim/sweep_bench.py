"""``trimtab sim sweep-bench``: one sweep's replays serially, on local processes and on Ray.

The same jobs (generated family scenarios, every default policy and each baseline's sweep) run
three ways; the figures are each way's wall time as a speed-up over the serial run measured in
the same process, whether the three gave identical results, and what a Ray task ships: the
pickled (scenario, trace) put once per scenario, the spec string per task, and the RunResult
sent back (its size per task). On a cluster, the per-scenario object is the only large
transfer; what dominates is the replays themselves (seconds each), so the speed-up follows the
number of CPUs until the slowest replay or the scenario count bounds it.
"""
from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

from trimtab.sim.clock import wall_perf_s


def run_sweep_bench(workers: int = 2, quick: bool = False,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    from trimtab.sim.cli import load_case
    from trimtab.sim.compare import run_jobs
    from trimtab.sim.heldout import write_family

    class _Quiet:
        def print(self, *_: Any, **__: Any) -> None:
            pass

    with tempfile.TemporaryDirectory() as tmp:
        kinds = ("step", "flash-crowd") if quick else ("step", "flash-crowd", "idle-burst")
        paths = write_family(Path(tmp), kinds, (1,), duration_s=1800.0 if quick else 3600.0)
        # The sweep's replays and the oracle (the past-only bound bisects serially in a task).
        cases = [load_case(p, [], True, _Quiet(), past_only=False) for p in paths]
    jobs = [(i, j) for i, c in enumerate(cases) for j in c.jobs()]
    if quick:
        jobs = jobs[::3]
    log(f"{len(jobs)} replays over {len(cases)} scenarios, {workers} workers")
    figures: dict[str, Any] = {"replays": len(jobs), "scenarios": len(cases), "workers": workers}
    timed: dict[str, tuple[float, dict]] = {}
    for how, kw in (("serial", {"workers": 1}), ("processes", {"workers": workers}),
                    ("ray", {"workers": workers, "ray_address": "local"})):
        t0 = wall_perf_s()
        res = run_jobs(cases, jobs, **kw)
        timed[how] = (wall_perf_s() - t0, res)
        log(f"{how}: {timed[how][0]:.1f} s")
    serial_s = timed["serial"][0]
    base = {k: v.summary for k, v in timed["serial"][1].items()}
    for how in ("processes", "ray"):
        wall_s, res = timed[how]
        figures[f"{how}_wall_s"] = round(wall_s, 2)
        figures[f"{how}_speedup_vs_serial"] = round(serial_s / wall_s, 3)
        figures[f"{how}_identical"] = {k: v.summary for k, v in res.items()} == base
    figures["serial_wall_s"] = round(serial_s, 2)
    figures["mean_replay_s"] = round(serial_s / len(jobs), 3)
    figures["shipped_per_scenario_bytes"] = max(
        len(pickle.dumps((c.scenario, c.trace))) for c in cases)
    figures["returned_per_task_bytes"] = max(
        len(pickle.dumps(r)) for r in timed["serial"][1].values())
    return figures
