"""``trimtab llm peer``: the issue's peer-simulator configuration, run through the engine.

Llama-2-70B on two A100s (profile ``llama2-70b-a100-tp2``), one replica, vLLM's scheduler
without chunked prefill (128 sequences, 4,096 tokens a step, 3,328 blocks of 16 tokens),
Azure conversation lengths (rows over 4,096 tokens scaled down), Poisson arrivals at 0.5, 1.0
and 1.25 requests per second, 2,000 requests each; then the saturation throughput: the same
requests all arriving at 50 requests per second, measured between the quarter and the
three-quarter mark of completions, when the batch is full and the queue long. A rate above
that throughput overloads the replica: its queue, and TTFT, grow until the arrivals stop.

The same lengths (one shuffle of the trace's rows with the seed) and the same unit-rate
exponential gaps (scaled by each rate) serve every rate, so the rates differ only in load.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from trimtab.sim.llm.types import ITL_BOUNDS_S, LlmRequests, SchedulerConfig

PROFILE = "llama2-70b-a100-tp2"
SCHEDULER = SchedulerConfig(max_num_seqs=128, max_num_batched_tokens=4096,
                            chunked_prefill=False, block_size=16, num_blocks=3328,
                            prefix_caching=False)
LENGTHS_PATH = "traces/azure_llm_conv.csv"
MAX_TOTAL_TOKENS = 4096
RATES_RPS = (0.5, 1.0, 1.25)
SATURATION_RPS = 50.0
SATURATION_WINDOW = (0.25, 0.75)        # fractions of completions bounding the measured window
_ARRIVAL_STREAM = 0x70656572            # "peer": the arrivals' random stream, apart from lengths


def engine_class() -> tuple[type, str]:
    """The engine to run: the reference when present (it keeps every inter-token gap, so ITL
    quantiles are exact; the compiled engine is held equal to it bit for bit), else the
    compiled one (ITL quantiles interpolated in its histogram)."""
    try:
        from trimtab.sim.llm.reference import ReferenceFleet
        return ReferenceFleet, "reference"
    except ModuleNotFoundError as exc:
        if exc.name != "trimtab.sim.llm.reference":
            raise
    from trimtab.sim.llm.core import CompiledFleet
    return CompiledFleet, "compiled"


def peer_lengths(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, output) tokens of ``n`` requests, drawn as a scenario's ``lengths:`` would be."""
    from trimtab.sim.data import data_path
    from trimtab.sim.traces.config import LengthsConfig
    from trimtab.sim.traces.lengths import with_lengths

    cfg = LengthsConfig(path=LENGTHS_PATH, format="azure-llm", max_total_tokens=MAX_TOTAL_TOKENS)
    prompt, output, _, _ = with_lengths(n, cfg, seed, data_path())
    return prompt.astype(np.int64), output.astype(np.int64)


def unit_gaps(n: int, seed: int) -> np.ndarray:
    """``n`` exponential gaps of mean 1 s; a rate's arrivals are their running sum / rate."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _ARRIVAL_STREAM]))
    return rng.exponential(1.0, n)


def histogram_quantile(counts: np.ndarray, q: float, bounds: tuple[float, ...] = ITL_BOUNDS_S
                       ) -> float:
    """A quantile from ``le`` bucket counts, interpolated log-linearly inside its bucket
    (the buckets are log-spaced); NaN when empty."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return math.nan
    rank = q * total
    cum = np.cumsum(counts)
    k = int(np.searchsorted(cum, rank, side="left"))
    if k >= len(bounds):                         # the +Inf bucket: the last bound is all we know
        return float(bounds[-1])
    hi = bounds[k]
    lo = bounds[k - 1] if k > 0 else bounds[0] / (bounds[1] / bounds[0])
    before = cum[k - 1] if k > 0 else 0.0
    frac = (rank - before) / counts[k] if counts[k] > 0 else 1.0
    return float(lo * (hi / lo) ** min(max(frac, 0.0), 1.0))


def _pct(x: np.ndarray, q: float) -> float:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if len(x) else math.nan


def _simulate(requests: LlmRequests, seed: int, *, record_steps: bool = False) -> Any:
    from trimtab.sim.llm.profile import load_step_model

    cls, name = engine_class()
    kwargs: dict[str, Any] = {"seed": seed}
    if record_steps:
        kwargs["record_steps"] = True
    if name == "reference":
        kwargs["record_gaps"] = True
    fleet = cls(requests, SCHEDULER, load_step_model(PROFILE), **kwargs)
    fleet.add_replica(0.0)
    # Every request is served well before this: the drain of 2,000 requests takes minutes.
    fleet.advance(float(requests.arrival_s[-1]) + 1e6)
    return fleet


def _itl(fleet: Any, served: np.ndarray) -> tuple[float, float, str]:
    if hasattr(fleet, "gaps"):
        gaps = [np.asarray(fleet.gaps(int(i)), dtype=np.float64) for i in served]
        allg = np.concatenate(gaps) if gaps else np.zeros(0)
        return _pct(allg, 50), _pct(allg, 99), "gaps"
    counts = np.asarray(fleet.totals()["itl_counts"] if "itl_counts" in fleet.totals()
                        else fleet.itl_counts)
    return (histogram_quantile(counts, 0.50), histogram_quantile(counts, 0.99),
            "histogram")


def measure(requests: LlmRequests, fleet: Any) -> dict[str, Any]:
    """The figures of one finished run (SPEC.md "Derived per-request figures")."""
    arrival = requests.arrival_s
    first, finish = np.asarray(fleet.first_token_s), np.asarray(fleet.finish_s)
    generated = np.asarray(fleet.generated)
    outcome = np.asarray(fleet.outcome)
    served = np.flatnonzero(outcome == 1)
    ttft = first[served] - arrival[served]
    e2e = finish[served] - arrival[served]
    g = generated[served]
    multi = g > 1
    tpot = (finish[served][multi] - first[served][multi]) / (g[multi] - 1)
    itl_p50, itl_p99, itl_from = _itl(fleet, served)
    totals = fleet.totals()
    span_s = float(finish[served].max() - arrival[0]) if len(served) else math.nan
    return {
        "requests": len(arrival), "served": int(len(served)),
        "failed": int(np.count_nonzero(outcome == 4)),
        "ttft_p50_s": _pct(ttft, 50), "ttft_p99_s": _pct(ttft, 99),
        "itl_p50_s": itl_p50, "itl_p99_s": itl_p99, "itl_from": itl_from,
        "e2e_p50_s": _pct(e2e, 50), "e2e_p99_s": _pct(e2e, 99),
        "tpot_p50_s": _pct(tpot, 50), "tpot_p99_s": _pct(tpot, 99),
        "preemptions": int(totals["preemptions"]), "steps": int(totals["steps"]),
        "prompt_tokens": int(totals["prompt_tokens"]),
        "output_tokens": int(totals["output_tokens"]),
        "throughput_rps": len(served) / span_s,
        "output_tokens_per_s": int(totals["output_tokens"]) / span_s,
        "offered_rps": (len(arrival) - 1) / float(arrival[-1] - arrival[0]),
    }


def saturation(prompt: np.ndarray, output: np.ndarray, gaps: np.ndarray, seed: int
               ) -> dict[str, Any]:
    """Throughput with the queue never empty: completions and output tokens per second
    between the ``SATURATION_WINDOW`` marks of completions. Without chunked prefill every
    scheduled request makes one token per step, so a step's tokens are its ``scheduled``."""
    arrival = np.cumsum(gaps) / SATURATION_RPS
    req = LlmRequests(arrival, prompt, output)
    fleet = _simulate(req, seed, record_steps=True)
    done = np.sort(np.asarray(fleet.finish_s)[np.asarray(fleet.outcome) == 1])
    lo_k, hi_k = (int(f * (len(done) - 1)) for f in SATURATION_WINDOW)
    t0, t1 = float(done[lo_k]), float(done[hi_k])
    log = fleet.step_log()
    end = np.asarray(log["end_s"])
    inside = (end > t0) & (end <= t1)
    tokens = int(np.sum(np.asarray(log["scheduled"])[inside]))
    m = measure(req, fleet)
    return {"requests": len(arrival), "rate_rps": SATURATION_RPS,
            "window": f"{SATURATION_WINDOW[0]:.0%}-{SATURATION_WINDOW[1]:.0%} of completions",
            "window_s": [t0, t1], "throughput_rps": (hi_k - lo_k) / (t1 - t0),
            "output_tokens_per_s": tokens / (t1 - t0),
            "mean_running": float(np.mean(np.asarray(log["running"])[inside])),
            "preemptions": m["preemptions"], "ttft_p50_s": m["ttft_p50_s"],
            "tpot_p50_s": m["tpot_p50_s"]}


def run_peer(n_requests: int = 2000, seed: int = 42, rates_rps: tuple[float, ...] = RATES_RPS,
             with_saturation: bool = True) -> dict[str, Any]:
    """Every figure of the peer comparison, as one JSON-ready dict."""
    prompt, output = peer_lengths(n_requests, seed)
    gaps = unit_gaps(n_requests, seed)
    rows = []
    for rate in rates_rps:
        req = LlmRequests(np.cumsum(gaps) / rate, prompt, output)
        rows.append({"rate_rps": rate, **measure(req, _simulate(req, seed))})
    out: dict[str, Any] = {
        "config": {"profile": PROFILE, "replicas": 1, "scheduler": SCHEDULER.__dict__.copy(),
                   "lengths": {"path": LENGTHS_PATH, "format": "azure-llm",
                               "max_total_tokens": MAX_TOTAL_TOKENS},
                   "requests": n_requests, "seed": seed,
                   "prompt_tokens_mean": float(prompt.mean()),
                   "output_tokens_mean": float(output.mean())},
        "engine": engine_class()[1], "rates": rows}
    if with_saturation:
        sat = out["saturation"] = saturation(prompt, output, gaps, seed)
        for row in rows:        # above 1 the queue grows for as long as requests arrive
            row["load_vs_saturation"] = row["offered_rps"] / sat["throughput_rps"]
    return out
