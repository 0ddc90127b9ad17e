"""``trimtab sim bench``: the engine against SimPy on M/M/4, the fleet on a scaled Azure trace,
and peak memory replaying 10 million requests. Figures are ratios against baselines measured in
the same run (SimPy, and a plain heapq loop), because these machines are shared and noisy.
"""
from __future__ import annotations

import heapq
import json
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

from trimtab.sim.validate_cases import TRACES_DIR, Case, exp_service

LAM, SERVERS = 3.2, 4          # M/M/4 at rho = 0.8


def simpy_mmc(arrival_s: np.ndarray, service_s: np.ndarray) -> tuple[float, float]:
    """The same M/M/4 FCFS model in SimPy (Resource of capacity 4); (customers/s, mean Wq)."""
    import simpy

    env = simpy.Environment()
    server = simpy.Resource(env, capacity=SERVERS)
    waits: list[float] = []

    def customer(arrived: float, svc: float):  # type: ignore[no-untyped-def]
        with server.request() as req:
            yield req
            waits.append(env.now - arrived)
            yield env.timeout(svc)

    def source():  # type: ignore[no-untyped-def]
        prev = 0.0
        for a, s in zip(arrival_s.tolist(), service_s.tolist()):
            yield env.timeout(a - prev)
            prev = a
            env.process(customer(a, s))

    env.process(source())
    t0 = time.perf_counter()
    env.run()
    wall_s = time.perf_counter() - t0
    return len(arrival_s) / wall_s, float(np.mean(waits))


def heapq_mmc(arrival_s: np.ndarray, service_s: np.ndarray) -> tuple[float, float]:
    """A plain heapq event loop for M/M/4 FCFS: the floor a Python DES can hope for."""
    from collections import deque

    t0 = time.perf_counter()
    heap: list[tuple[float, int, int]] = []   # (time, kind 0 = departure / 1 = arrival, id)
    for i, a in enumerate(arrival_s.tolist()):
        heap.append((a, 1, i))
    heapq.heapify(heap)
    svc = service_s.tolist()
    arr = arrival_s.tolist()
    queue: deque[int] = deque()
    free = SERVERS
    total_wait = 0.0
    push, pop = heapq.heappush, heapq.heappop
    while heap:
        t, kind, i = pop(heap)
        if kind == 1:
            if free:
                free -= 1
                push(heap, (t + svc[i], 0, i))
            else:
                queue.append(i)
        elif queue:
            j = queue.popleft()
            total_wait += t - arr[j]
            push(heap, (t + svc[j], 0, j))
        else:
            free += 1
    wall_s = time.perf_counter() - t0
    return len(arr) / wall_s, total_wait / len(arr)


def engine_mmc(n: int, seed: int) -> tuple[float, dict[str, np.ndarray]]:
    """The real fleet model (router queue, replicas with concurrency 1, static policy ticks)
    through trimtab.sim.replay.simulate; trace generation excluded. (customers/s, request records)."""
    from trimtab.sim.replay import simulate
    from trimtab.sim.traces import load_trace

    case = Case("bench M/M/4", LAM, SERVERS, exp_service(1.0), ())
    sc = case.scenario(n, seed)
    trace = load_trace(sc.trace, sc.base_dir)
    t0 = time.perf_counter()
    res = simulate(sc, f"static:replicas={SERVERS}", trace, record_requests=True)
    wall_s = time.perf_counter() - t0
    req = res.requests
    assert req is not None
    return len(trace) / wall_s, req


def fleet_scenario(rate_scale: float, time_scale: float, end_s: float | None = None) -> Any:
    """50 replicas, Triton batching (max 16, 10 ms), least-outstanding router with a queue
    timeout, 15 s controller ticks, static policy, on the Azure conversation trace."""
    from trimtab.sim.scenario import scenario_from_dict

    trace: dict[str, Any] = {"path": "azure_llm_conv.csv", "format": "azure-llm",
                             "rate_scale": rate_scale, "time_scale": time_scale,
                             "jitter_s": 0.05, "seed": 1}
    if end_s is not None:
        trace["end_s"] = end_s
    return scenario_from_dict({
        "name": "bench-fleet", "trace": trace,
        "service": {"base_ms": 30, "per_item_ms": 5, "cv": 0.2, "max_batch": 16,
                    "batch_timeout_ms": 10},
        "replicas": {"initial": 50, "min": 50, "max": 50, "concurrency_limit": 64,
                     "queue_timeout_s": 5},
        "controller": {"interval_s": 15},
    }, "<bench fleet>", TRACES_DIR)


def fleet_run(rate_scale: float, time_scale: float, end_s: float | None = None
              ) -> dict[str, float]:
    from trimtab.sim.replay import simulate
    from trimtab.sim.traces import load_trace

    sc = fleet_scenario(rate_scale, time_scale, end_s)
    trace = load_trace(sc.trace, sc.base_dir)
    t0 = time.perf_counter()
    res = simulate(sc, "static:replicas=50", trace)
    wall_s = time.perf_counter() - t0
    acc = res.accounting
    return {"requests": len(trace), "wall_s": wall_s, "requests_per_s": len(trace) / wall_s,
            "events_per_s": res.events / wall_s,
            "mean_batch": acc["served"] / max(acc["batches"], 1)}


_RSS_CHILD = """
import json, resource, sys
from trimtab.sim.bench import fleet_run
out = fleet_run(float(sys.argv[1]), float(sys.argv[2]))
out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""


def peak_rss_run(rate_scale: float, time_scale: float) -> dict[str, float]:
    """Replay in a fresh interpreter and read its peak RSS (ru_maxrss, KiB on Linux)."""
    proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(rate_scale), str(time_scale)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"peak-RSS replay failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def trace_parse(rows: int) -> dict[str, float]:
    """Parse an Azure-format CSV of ``rows`` rows (the bundled trace repeated), fast path."""
    import tempfile
    from pathlib import Path

    from trimtab.sim.traces import files

    lines = (TRACES_DIR / "azure_llm_conv.csv").read_text().splitlines()
    body = lines[1:]
    text = "\n".join([lines[0]] + (body * (rows // len(body) + 1))[:rows]) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        path.write_text(text)
        t0 = time.perf_counter()
        events = files.read_azure(path)
        wall_s = time.perf_counter() - t0
    return {"azure_rows": len(events.time_s), "azure_parse_s": wall_s,
            "azure_rows_per_s": len(events.time_s) / wall_s}


def run_bench(quick: bool = False, log: Callable[..., None] = print) -> dict[str, Any]:
    """Every figure, as ``{"mmc": {...}, "fleet": {...}, "trace": {...}, "llm": {...}}`` (the
    LLM engine's parts are printed in full by ``trimtab.sim.llm.bench.report``)."""
    n_engine, n_simpy = (20_000, 10_000) if quick else (1_000_000, 200_000)
    engine_rate, req = engine_mmc(n_engine, seed=7)
    log(f"engine M/M/4: {engine_rate:,.0f} customers/s")
    # SimPy and the heapq loop replay the engine's own arrival and service streams (a
    # prefix), so all three must give the same waits: a check that the race is fair.
    arrival, service = req["arrival_s"][:n_simpy], req["service_s"][:n_simpy]
    engine_wq = float(np.mean(req["start_s"][:n_simpy] - arrival))
    simpy_rate, simpy_wq = simpy_mmc(arrival, service)
    log(f"SimPy M/M/4: {simpy_rate:,.0f} customers/s")
    heap_rate, heap_wq = heapq_mmc(arrival, service)
    log(f"heapq M/M/4: {heap_rate:,.0f} customers/s")
    # Fleet: the Azure trace x100 (1.94M requests), 8x faster, on 50 replicas (~60% busy).
    rate_scale, time_scale = (2.0, 8.0) if quick else (100.0, 8.0)
    fleet = fleet_run(rate_scale, time_scale)
    log(f"fleet: {fleet['requests_per_s']:,.0f} requests/s over {fleet['requests']:,} requests")
    # Peak memory: x517 gives 10.01M requests; time is stretched to keep the fleet run's
    # request rate (about 60 % busy), so this is the same load for 5.2x longer.
    big_scale = 10.0 if quick else 517.0
    big = peak_rss_run(big_scale, time_scale * rate_scale / big_scale)
    log(f"10M replay: peak RSS {big['peak_rss_bytes'] / 2**20:,.0f} MiB")
    parse = trace_parse(50_000 if quick else 1_000_000)
    log(f"Azure CSV: {parse['azure_rows']:,} rows parsed in {parse['azure_parse_s']:.2f} s")
    from trimtab.sim.llm.bench import report as llm_report, run_llm_bench

    llm = run_llm_bench(quick, log=log)
    llm_report(llm, quick)
    return {
        "mmc": {"engine_customers_per_s": engine_rate, "simpy_customers_per_s": simpy_rate,
                "ratio": engine_rate / simpy_rate, "heapq_customers_per_s": heap_rate,
                "engine_vs_heapq": engine_rate / heap_rate, "engine_customers": n_engine,
                "simpy_customers": n_simpy, "engine_mean_wq_s": engine_wq,
                "simpy_mean_wq_s": simpy_wq, "heapq_mean_wq_s": heap_wq},
        "fleet": {"requests_per_s": fleet["requests_per_s"],
                  "events_per_s": fleet["events_per_s"], "mean_batch": fleet["mean_batch"],
                  "peak_rss_bytes": big["peak_rss_bytes"], "requests": fleet["requests"],
                  "rss_run_requests": big["requests"],
                  "rss_run_requests_per_s": big["requests_per_s"]},
        "trace": parse,
        "llm": llm["summary"],
    }
