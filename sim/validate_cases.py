"""The models ``sim validate`` checks, each a Scenario built in code, with its theory values.

Service is affine with ``per_item_ms = 0`` so a batch takes ``base_ms`` times noise of mean 1
(exponential, deterministic or lognormal), whatever its size. A central FCFS queue is the
router's queue with ``concurrency_limit: 1`` per replica; a loss system adds ``max_queue: 0``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trimtab.sim import queueing as qt
from trimtab.sim.data import data_path

TRACES_DIR = data_path("traces")


@dataclass
class Check:
    """One row of the validation table."""

    name: str
    theory: float
    simulated: float
    rel_error: float
    tolerance: float
    passed: bool
    std_error: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class Metric:
    """A per-customer value whose long-run mean theory predicts."""

    name: str
    label: str
    theory: float
    kind: str            # wait | waited | wait_over | response | shed
    threshold_s: float = 0.0

    def values(self, req: dict[str, np.ndarray]) -> np.ndarray:
        wait = req["start_s"] - req["arrival_s"]
        if self.kind == "wait":
            return wait
        if self.kind == "waited":
            return (wait > 0).astype(np.float64)
        if self.kind == "wait_over":
            return (wait > self.threshold_s).astype(np.float64)
        if self.kind == "response":
            return req["finish_s"] - req["arrival_s"]
        if self.kind == "shed":
            from trimtab.sim.fleet.model import SHED

            return (req["outcome"] == SHED).astype(np.float64)
        raise ValueError(f"metric kind {self.kind!r} is not known")


@dataclass(frozen=True)
class Case:
    name: str
    lam: float
    servers: int
    service: dict[str, Any]
    metrics: tuple[Metric, ...]
    replicas: dict[str, Any] = field(default_factory=dict)
    recursion: bool = False          # also cross-check with Kiefer–Wolfowitz / Lindley

    def scenario(self, customers: int, seed: int) -> Any:
        from trimtab.sim.scenario import scenario_from_dict

        duration_s = customers / self.lam
        replicas = {"initial": self.servers, "min": self.servers, "max": self.servers,
                    "concurrency_limit": 1, "cold_start_s": 0.0, **self.replicas}
        return scenario_from_dict({
            "name": self.name,
            "trace": {"format": "poisson", "rate_rps": self.lam, "duration_s": duration_s,
                      "seed": 1000 + seed},
            "service": {"model": "affine", "per_item_ms": 0.0, "max_batch": 1, **self.service},
            "replicas": replicas,
            # Few ticks: the static policy does nothing, and a tick costs a snapshot.
            "controller": {"interval_s": max(60.0, duration_s / 50)},
            "seed": 2000 + seed,
            "drain_s": 1e9,                  # run until every customer has left
        }, f"<validate {self.name}>", TRACES_DIR)


def exp_service(mean_s: float) -> dict[str, Any]:
    return {"base_ms": 1000.0 * mean_s, "dist": "exponential"}


def _erlang_c(c: int, lam: float) -> Case:
    m = qt.MMc(lam, 1.0, c)
    t_s = 1.0 / (c - lam)     # the mean wait of those who wait
    return Case(f"M/M/{c} Erlang C rho={lam / c:g}", lam, c, exp_service(1.0), (
        Metric("wq", "Wq (s)", m.wq_s, "wait"),
        Metric("pwait", "P(wait > 0)", m.wait_probability, "waited"),
        Metric("tail", f"tail P(Wq > {t_s:.3g} s)", m.wait_tail(t_s), "wait_over", t_s),
    ), recursion=c > 1)


def _erlang_b(dist: str, c: int, a: float) -> Case:
    service = {"base_ms": 1000.0, "dist": dist} | ({"cv": 1.5} if dist == "lognormal" else {})
    return Case(f"M/G/{c}/{c} Erlang B {dist} a={a:g}", a, c, service, (
        Metric("block", "P(block)", qt.erlang_b(c, a), "shed"),), replicas={"max_queue": 0})


def _setup(lam: float, setup_s: float) -> Case:
    theory = qt.setup_time_response_s(lam, 1.0, 2.0, setup_s, setup_s**2)
    return Case(f"M/M/1 setup I={setup_s:g} lam={lam:g}", lam, 1, exp_service(1.0), (
        Metric("t", "E[T] (s)", theory, "response"),),
        replicas={"initial": 1, "min": 0, "cold_start_s": setup_s, "scale_to_zero_idle_s": 0.0})


def _batched(name: str, lam: float, base_s: float, per_item_s: float, k: int,
             theory: qt.BulkResult) -> Case:
    service = {"base_ms": 1000 * base_s, "per_item_ms": 1000 * per_item_s, "dist": "exponential",
               "max_batch": k, "batching": "greedy"}
    return Case(name, lam, 1, service, (
        Metric("wq", "Wq (s)", theory.wq_s, "wait"),
        Metric("w", "W (s)", theory.w_s, "response"),
    ), replicas={"concurrency_limit": None})


CASES: list[Case] = [
    _erlang_c(1, 0.7),
    _erlang_c(4, 3.2),
    _erlang_c(16, 12.8),
    Case("M/M/1 P-K rho=0.8", 0.8, 1, exp_service(1.0),
         (Metric("wq", "Wq (s)", qt.mm1_wq_s(0.8, 1.0), "wait"),)),
    Case("M/D/1 P-K rho=0.8", 0.8, 1, {"base_ms": 1000.0, "dist": "deterministic"},
         (Metric("wq", "Wq (s)", qt.md1_wq_s(0.8, 1.0), "wait"),), recursion=True),
    _erlang_b("deterministic", 4, 3.0),
    _erlang_b("lognormal", 4, 3.0),
    Case("M/M/1/5 rho=0.8", 0.8, 1, exp_service(1.0),
         (Metric("block", "P(block) = P_K", qt.mm1k_blocking(0.8, 1.0, 5), "shed"),),
         replicas={"max_queue": 4}),
    _batched("bulk M/M^[8]/1 lam=6", 6.0, 1.0, 0.0, 8, qt.bulk_mmk1(6.0, 1.0, 8)),
    _batched("CTMC s(b)=0.5+0.1b K=8 lam=4", 4.0, 0.5, 0.1, 8, qt.batch_ctmc(4.0, 0.5, 0.1, 8)),
    _setup(0.5, 2.0),
    _setup(0.8, 5.0),
]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def trace_invariants(quick: bool, tolerance: float) -> list[Check]:
    """Little's law, work conservation and request accounting on the Azure trace, replayed
    through two replicas that are overloaded at times, so every outcome occurs: batching,
    a queue cap (shed), queue timeouts, and out-of-memory batches (failed, cold restart)."""
    from trimtab.sim.fleet.model import FAILED, PENDING, SERVED, SHED, TIMED_OUT
    from trimtab.sim.replay import simulate
    from trimtab.sim.scenario import scenario_from_dict

    trace: dict[str, Any] = {"path": "azure_llm_conv.csv", "format": "azure-llm",
                             "rate_scale": 16, "jitter_s": 0.5, "seed": 1}
    if quick:
        trace["end_s"] = 600.0
    sc = scenario_from_dict({
        "name": "azure-invariants", "trace": trace,
        # Only a full batch (12) does not fit in GPU memory: rare OOM failures and restarts.
        "service": {"base_ms": 30, "per_item_ms": 5, "cv": 0.5, "max_batch": 12,
                    "batch_timeout_ms": 10,
                    "memory": {"gpu_bytes": 100.0, "weights_bytes": 30.0,
                               "per_item_bytes": 6.1}},
        "replicas": {"initial": 2, "min": 2, "max": 2, "concurrency_limit": 16,
                     "max_queue": 60, "queue_timeout_s": 0.4,
                     "cold_start_s": 2.0},
        "controller": {"interval_s": 15}, "drain_s": 1e6,
    }, "<validate azure>", TRACES_DIR)
    res = simulate(sc, "static:replicas=2", record_requests=True)
    req, acc = res.requests, res.accounting
    assert req is not None
    arrival, start, finish, outcome = (req["arrival_s"], req["start_s"], req["finish_s"],
                                       req["outcome"])
    n = len(arrival)
    detail = (f"{n} requests: served {acc['served']}, shed {acc['shed']}, timed out "
              f"{acc['timed_out']}, failed {acc['failed']}")
    checks = []
    # Little: integral of N(t) dt over a horizon that starts and ends empty = sum of sojourns.
    sojourn = float(np.sum(finish - arrival))
    ends_empty = acc["in_system_end"] == 0 and not np.isnan(finish).any()
    checks.append(Check("Little's law on Azure replay: integral N dt = sum T (s)", sojourn,
                        acc["n_integral_s"], _rel(sojourn, acc["n_integral_s"]), tolerance,
                        ends_empty and _rel(sojourn, acc["n_integral_s"]) <= tolerance,
                        None, detail))
    # Work conservation: busy replica-seconds = sum over batches of their service time.
    served = outcome == SERVED
    batches = np.unique(np.stack([req["replica"][served].astype(np.float64), start[served],
                                  finish[served]]), axis=1)
    work = float(np.sum(batches[2] - batches[1]))
    checks.append(Check("work conservation: busy server-s = sum of batch times (s)", work,
                        acc["busy_server_s"], _rel(work, acc["busy_server_s"]), tolerance,
                        _rel(work, acc["busy_server_s"]) <= tolerance, None,
                        f"{batches.shape[1]} batches"))
    # Accounting: each request ends exactly once; the engine's own in-system count agrees.
    counts = {code: int(np.count_nonzero(outcome == code))
              for code in (PENDING, SERVED, SHED, TIMED_OUT, FAILED)}
    finished = counts[SERVED] + counts[SHED] + counts[TIMED_OUT] + counts[FAILED]
    accounted = finished + int(acc["in_system_end"])
    ordered = bool(np.all(start[served] >= arrival[served]) and np.all(finish[served] > start[served]))
    ok = (accounted == n == acc["arrived"] and counts[PENDING] == acc["in_system_end"]
          and ordered and min(counts[SHED], counts[TIMED_OUT], counts[FAILED]) > 0)
    checks.append(Check("accounting: served + shed + timed out + failed + in system = trace",
                        float(n), float(accounted), _rel(n, accounted), 0.0, ok, None, detail))
    return checks
