"""Throughput and memory of the compiled LLM engine (``CompiledFleet``), against the reference.

The ``llm`` section of ``trimtab sim bench`` (or ``python -m trimtab.sim.llm.bench [--quick]
[--json FILE]`` alone). Parts, each in its own process (so each peak RSS is its own):

- ``day``: a 50-replica Llama-2-70B fleet (A100 TP2: the fitted profile
  ``llama2-70b-a100-tp2``, and the stand-in model c0 25 ms, c_prefill 0.06, c_decode 0.25,
  c_kv 0.00005, cv 0.1), vLLM's scheduler without chunking (128 sequences, 4096 tokens a step,
  3,328 blocks of 16), Poisson at 1 request/s per replica for a simulated day, Azure
  conversation lengths capped at 4,096 tokens; advanced in 60-s ticks, finished ids taken
  each tick (as the replay does);
- ``mem``: 10M requests (116 replicas, the same load per replica, a day);
- ``one``: the same stream at 2,000 requests on one replica;
- ``compile``: import and first call with an empty numba cache (cold) and with it (warm);
- baselines in the same run: the reference engine (``ReferenceFleet``) on the one-replica
  stream and on the first 300 s of the 50-replica fleet (both engines), so figures print as
  ratios.

``--quick``: an hour instead of a day, 200k requests for ``mem``, 300 for ``one``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
MODULE = "trimtab.sim.llm.bench"
PROFILE = "llama2-70b-a100-tp2"
STAND_IN = dict(c0_ms=25.0, c_prefill_ms=0.06, c_decode_ms=0.25, c_kv_ms=0.00005, cv=0.1)
SCHED = dict(max_num_seqs=128, max_num_batched_tokens=4096, chunked_prefill=False,
             block_size=16, num_blocks=3328)
TICK_S = 60.0
DAY_S = 86_400.0


def step_model(name: str):
    from trimtab.sim.llm.types import StepModel

    if name == "stand-in":
        return StepModel(**STAND_IN, name="stand-in")
    try:
        from trimtab.sim.llm.profile import load_step_model
    except ImportError:            # before the fitted profile landed
        return StepModel(**STAND_IN, name="stand-in")
    return load_step_model(name)


def stream(n: int, rate_rps: float, seed: int = 42):
    """``n`` Poisson arrivals at ``rate_rps`` with Azure conversation lengths (<= 4096)."""
    from trimtab.sim.llm.types import LlmRequests
    from trimtab.sim.traces.config import LengthsConfig
    from trimtab.sim.traces.lengths import with_lengths

    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate_rps, n))
    cfg = LengthsConfig(path="traces/azure_llm_conv.csv", format="azure-llm",
                        max_total_tokens=4096)
    prompt, output, _, _ = with_lengths(n, cfg, seed, HERE.parent)
    return LlmRequests(arrival, prompt, output)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_fleet(engine: str, replicas: int, n: int, model: str, until_s: float | None = None
              ) -> dict:
    """Build the stream and the fleet, then time ``advance`` in ticks to the end (or
    ``until_s``) with ``take_finished`` each tick."""
    from trimtab.sim.llm.types import SchedulerConfig

    if engine == "compiled":
        from trimtab.sim.llm.core import CompiledFleet as Engine
    else:
        from trimtab.sim.llm.reference import ReferenceFleet as Engine
    t0 = time.perf_counter()
    req = stream(n, float(replicas))
    build_s = time.perf_counter() - t0
    step = step_model(model)
    f = Engine(req, SchedulerConfig(**SCHED), step, seed=1)
    for _ in range(replicas):
        f.add_replica(0.0)
    f.advance(0.0)                 # compiled: loads (or compiles) the kernels
    end_s = float(req.arrival_s[-1]) + 3600.0 if until_s is None else until_s
    wall0, cpu0 = time.perf_counter(), time.process_time()
    t, finished = 0.0, 0
    while t < end_s:
        t = min(t + TICK_S, end_s)
        f.advance(t)
        finished += len(f.take_finished())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    tot = f.totals()
    done = f.arrivals_done
    out = dict(engine=engine, model=step.name, replicas=replicas, requests=done,
               finished=finished, served=int(tot["served"]), steps=int(tot["steps"]),
               preemptions=int(tot["preemptions"]), sim_s=end_s, wall_s=wall, cpu_s=cpu,
               requests_per_s=done / wall, steps_per_s=tot["steps"] / wall,
               sim_s_per_wall_s=end_s / wall, build_s=build_s, peak_rss_mb=peak_rss_mb(),
               mean_prompt=float(req.prompt_tokens.mean()),
               mean_output=float(req.output_tokens.mean()))
    if engine == "compiled":
        q = f._q
        own = (q.outcome.nbytes + q.rqi.nbytes + q.rqf.nbytes + q.fin.nbytes
               + sum(a.nbytes for a in f._p) + f._log.logi.nbytes + f._log.logf.nbytes)
        out["engine_bytes_per_request"] = own / max(len(req), 1)
        out["stream_bytes_per_request"] = (req.arrival_s.nbytes + req.prompt_tokens.nbytes
                                           + req.output_tokens.nbytes + req.key_offsets.nbytes
                                           + req.keys.nbytes) / max(len(req), 1)
    return out


def compile_times() -> dict:
    """Import + first call with an empty numba cache (cold), then with it (warm)."""
    code = ("import time; t=time.perf_counter(); import numpy as np; "
            "from trimtab.sim.llm.core import CompiledFleet; "
            "from trimtab.sim.llm.types import LlmRequests, SchedulerConfig, StepModel; "
            "r=LlmRequests(np.arange(5.0), np.full(5, 40), np.full(5, 3)); "
            "f=CompiledFleet(r, SchedulerConfig(), StepModel(c0_ms=5.0)); f.add_replica(0.0); "
            "f.set_limit(4); f.advance(100.0); print(time.perf_counter()-t)")
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for kind in ("cold", "warm"):
            res = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                 capture_output=True, text=True)
            out[f"{kind}_s"] = float(res.stdout.strip().splitlines()[-1])
    return out


def child(part: str, argv: list[str]) -> dict:
    """Run one part in a fresh process; its JSON line back."""
    res = subprocess.run([sys.executable, "-m", MODULE, "--part", part, *argv], check=True,
                         capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_llm_bench(quick: bool = False, log=print) -> dict:
    """Every part (see the module docstring), each in its own process; the figures by part."""
    span_s = 3600.0 if quick else DAY_S
    n_day = int(50 * span_s)
    n_mem = 200_000 if quick else 10_000_000
    n_one = 300 if quick else 2000
    slice_s = 60.0 if quick else 300.0      # the reference on the 50-replica fleet
    load0 = os.getloadavg()
    jobs = {
        "compile": {},
        "day_fitted": dict(engine="compiled", replicas=50, n=n_day, model=PROFILE),
        "day_stand_in": dict(engine="compiled", replicas=50, n=n_day, model="stand-in"),
        "mem_10m": dict(engine="compiled", replicas=int(round(n_mem / span_s)), n=n_mem,
                        model=PROFILE),
        "one_replica": dict(engine="compiled", replicas=1, n=n_one, model=PROFILE),
        "ref_one_replica": dict(engine="reference", replicas=1, n=n_one, model=PROFILE),
        "ref_fleet_slice": dict(engine="reference", replicas=50, n=n_day, model=PROFILE,
                                until_s=slice_s),
        "fleet_slice": dict(engine="compiled", replicas=50, n=n_day, model=PROFILE,
                            until_s=slice_s),
    }
    res: dict = {}
    for name, kw in jobs.items():
        t0 = time.perf_counter()
        res[name] = child("compile" if name == "compile" else "fleet", ["--args",
                                                                         json.dumps(kw)])
        log(f"llm {name}: {time.perf_counter() - t0:.0f} s")
    res["load_avg"] = dict(start=load0, end=os.getloadavg())
    day, ref = res["day_fitted"], res["ref_fleet_slice"]
    res["summary"] = {
        "day_requests": day["requests"], "day_wall_s": day["wall_s"], "day_cpu_s": day["cpu_s"],
        "day_requests_per_s": day["requests_per_s"], "day_steps_per_s": day["steps_per_s"],
        "day_vs_reference": day["requests_per_s"] / ref["requests_per_s"],
        "one_replica_vs_reference": (res["one_replica"]["requests_per_s"]
                                     / res["ref_one_replica"]["requests_per_s"]),
        "mem_requests": res["mem_10m"]["requests"],
        "mem_peak_rss_mb": res["mem_10m"]["peak_rss_mb"],
        "compile_cold_s": res["compile"]["cold_s"], "compile_warm_s": res["compile"]["warm_s"],
    }
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="an hour, 1M requests, 300 on one")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--args", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        kw = json.loads(a.args)
        res = compile_times() if a.part == "compile" else run_fleet(**kw)
        print(json.dumps(res))
        return 0
    res = run_llm_bench(a.quick, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    report(res, a.quick)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


def report(res: dict, quick: bool) -> None:
    load = res["load_avg"]
    print(f"CompiledFleet (numba) vs ReferenceFleet, one core each; load average "
          f"{load['start'][0]:.1f} -> {load['end'][0]:.1f}" + (" (--quick)" if quick else ""))
    c = res["compile"]
    print(f"  compile: cold {c['cold_s']:.1f} s (empty numba cache), warm {c['warm_s']:.1f} s")
    ref1, reff = res["ref_one_replica"], res["ref_fleet_slice"]
    for name, base in (("day_fitted", reff), ("day_stand_in", reff), ("mem_10m", reff),
                       ("fleet_slice", reff), ("one_replica", ref1)):
        r = res[name]
        print(f"  {name}: {r['replicas']} replicas, {r['requests']:,} requests, "
              f"{r['steps']:,} steps, {r['sim_s']:,.0f} s simulated ({r['model']})")
        print(f"    wall {r['wall_s']:.2f} s (cpu {r['cpu_s']:.2f} s); "
              f"{r['requests_per_s']:,.0f} req/s = "
              f"{r['requests_per_s'] / base['requests_per_s']:,.0f}x the reference's; "
              f"{r['steps_per_s']:,.0f} steps/s = "
              f"{r['steps_per_s'] / base['steps_per_s']:,.0f}x")
        print(f"    peak RSS {r['peak_rss_mb']:,.0f} MB (engine tables "
              f"{r['engine_bytes_per_request']:.0f} B/request, the stream's arrays "
              f"{r['stream_bytes_per_request']:.0f}; stream built in {r['build_s']:.1f} s)")
    for name in ("ref_one_replica", "ref_fleet_slice"):
        r = res[name]
        print(f"  baseline {name}: {r['replicas']} replicas, {r['requests']:,} requests, "
              f"{r['steps']:,} steps, wall {r['wall_s']:.2f} s, "
              f"{r['requests_per_s']:,.0f} req/s, {r['steps_per_s']:,.0f} steps/s")


if __name__ == "__main__":
    sys.exit(main())
