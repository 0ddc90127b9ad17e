"""Degenerate LLM engines with a closed form: an M/G/1 queue and a fixed decode batch.

Each check takes the engine class (``ReferenceFleet`` or ``CompiledFleet``, same signature)
and returns a dict: the figures, ``passed``, and ``checks``, a list of rows with the fields of
``trimtab.sim.validate_cases.Check`` (name, theory, simulated, rel_error, tolerance, passed,
std_error, detail), so ``sim validate`` can print them beside its queueing checks.

- ``mg1_check``: one replica, ``max_num_seqs = 1``, one output token per request, Poisson
  arrivals. A request is then served by exactly one prefill step of its prompt, FIFO, one at a
  time: an M/G/1 queue whose service time is the step time of the prompt. The mean TTFT (= the
  sojourn) must match Pollaczek-Khinchine, ``E[T] = lambda E[S^2] / (2 (1 - rho)) + E[S]``,
  within ``z`` batch-means standard errors. Exact on the side: request i's step (the i-th)
  must end at its start plus the model's prefill time of its prompt times the noise of step
  i, and the waits must equal Lindley's recursion on those step times. One prompt length and
  ``cv = 0`` make it an M/D/1.
- ``fixed_decode_check``: ``k`` one-token prompts at t = 0 with ``output`` tokens each and no
  noise, queued until the replica appears at t = 0 (else the first arrival would start a step
  alone). Step 1 prefills all of them; step n >= 2 decodes all k with ``K = k n`` KV tokens, so
  it lasts ``c0 + c_decode k + c_kv k n`` ms (a fixed period when ``c_kv = 0``). Every step's
  end must equal its start plus that (bit for bit, same evaluation order), steps must follow
  one another without a gap, and every inter-token gap must be the step's duration.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from trimtab.sim.fleet.types import PENDING, SERVED
from trimtab.sim.llm.types import (ITL_BOUNDS_S, LlmRequests, SchedulerConfig, StepModel,
                                   noise_factor)
from trimtab.sim.queueing import lindley_waits

__all__ = ["fixed_decode_check", "mg1_check", "pollaczek_khinchine_s"]

MG1_STEP = StepModel(c0_ms=4.0, c_prefill_ms=0.01, c_kv_ms=0.002, c_attn_ms=1e-6)
EXACT_TOLERANCE_S = 1e-9


def _row(name: str, theory: float, simulated: float, tolerance: float, passed: bool,
         std_error: float | None = None, detail: str = "") -> dict[str, Any]:
    rel = abs(simulated - theory) / abs(theory) if theory else abs(simulated - theory)
    return dict(name=name, theory=float(theory), simulated=float(simulated), rel_error=rel,
                tolerance=float(tolerance), passed=bool(passed), std_error=std_error,
                detail=detail)


def _run(engine_cls, req: LlmRequests, sched: SchedulerConfig, step: StepModel, seed: int,
         chunk_s: float, queue_first: bool = False):
    """Run to the end on one replica, READY at t = 0; with ``queue_first`` the arrivals at
    t = 0 wait in the router queue until it appears, so its first step takes them all."""
    eng = engine_cls(req, sched, step, seed=seed, record_steps=True)
    if queue_first:
        eng.advance(0.0)
    eng.add_replica(0.0)
    end_s = float(req.arrival_s[-1]) if len(req) else 0.0
    eng.advance(end_s)
    while (eng.outcome == PENDING).any():
        eng.advance(eng.now_s + chunk_s)
    return eng


def prefill_step_s(step: StepModel, prompt: int) -> float:
    """The mean time of one step that prefills ``prompt`` tokens and nothing else."""
    return step.mean_ms(prompt, 0, prompt, prompt * prompt) / 1000.0


def pollaczek_khinchine_s(rate_rps: float, mean_s: float, second_moment_s2: float) -> float:
    """Mean sojourn of an M/G/1 FIFO queue: ``lambda E[S^2] / (2 (1 - rho)) + E[S]``."""
    rho = rate_rps * mean_s
    if not rho < 1:
        raise ValueError(f"pollaczek_khinchine_s: rho = {rho!r}, must be < 1")
    return rate_rps * second_moment_s2 / (2.0 * (1.0 - rho)) + mean_s


def mg1_check(engine_cls, *, rate_rps: float = 40.0,
              prompt_values: Sequence[int] = (64, 256, 1024, 2048),
              prompt_probs: Sequence[float] | None = (0.4, 0.3, 0.2, 0.1),
              step: StepModel = MG1_STEP, n: int = 20_000, seed: int = 0, batches: int = 20,
              warmup_frac: float = 0.1, z: float = 4.0, block_size: int = 16) -> dict[str, Any]:
    """One replica as an M/G/1 queue (see the module docstring); the prompt lengths are drawn
    from ``prompt_values`` with ``prompt_probs`` (None: equally likely)."""
    values = np.asarray(prompt_values, dtype=np.int64)
    probs = (np.full(len(values), 1.0 / len(values)) if prompt_probs is None
             else np.asarray(prompt_probs, dtype=np.float64))
    if len(probs) != len(values) or not math.isclose(probs.sum(), 1.0):
        raise ValueError("mg1_check: prompt_probs must have one probability per prompt value "
                         "and sum to 1")
    s = np.asarray([prefill_step_s(step, int(p)) for p in values])
    mean_s = float(probs @ s)
    second_s2 = float(probs @ (s * s)) * (1.0 + step.cv * step.cv)   # lognormal: E[X^2]=1+cv^2
    theory_s = pollaczek_khinchine_s(rate_rps, mean_s, second_s2)
    rng = np.random.default_rng(seed)
    req = LlmRequests(np.cumsum(rng.exponential(1.0 / rate_rps, n)),
                      rng.choice(values, size=n, p=probs), np.ones(n, dtype=np.int64))
    max_p = int(values.max())
    sched = SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=max_p, chunked_prefill=False,
                            block_size=block_size, num_blocks=-(-max_p // block_size))
    eng = _run(engine_cls, req, sched, step, seed, chunk_s=100.0 * mean_s * n / batches)
    served = bool((eng.outcome == SERVED).all())
    ttft = eng.first_token_s - req.arrival_s
    sojourn = eng.finish_s - req.arrival_s
    first = int(n * warmup_frac)
    means = np.asarray([b.mean() for b in np.array_split(ttft[first:], batches)])
    estimate = float(means.mean())
    se = float(means.std(ddof=1) / math.sqrt(batches))
    # Exact: the waits are Lindley's recursion on the engine's own step durations.
    log = eng.step_log()
    service = log["end_s"] - log["start_s"]
    waits = eng.first_scheduled_s - req.arrival_s
    one_step_each = len(service) == n and bool(np.all(log["scheduled"] == 1))
    lindley_err = step_err = math.inf
    if one_step_each:
        lindley_err = float(np.max(np.abs(lindley_waits(req.arrival_s, service) - waits)))
        model_s = np.asarray([prefill_step_s(step, int(p)) * noise_factor(seed, 0, i, step.cv)
                              for i, p in enumerate(req.prompt_tokens)])
        step_err = float(np.max(np.abs(log["end_s"] - (log["start_s"] + model_s))))
    kind = "M/D/1" if len(values) == 1 and step.cv == 0 else "M/G/1"
    rho = rate_rps * mean_s
    ttft_is_sojourn = bool(np.array_equal(ttft, sojourn))
    checks = [
        _row(f"{kind} rho={rho:.2f}: mean TTFT (s), Pollaczek-Khinchine", theory_s, estimate,
             z * se / theory_s, abs(estimate - theory_s) <= z * se and served, se,
             f"{n} requests, {batches} batch means after {first} warm-up"),
        _row(f"{kind}: max |wait - Lindley| (s)", 0.0, lindley_err, EXACT_TOLERANCE_S,
             lindley_err <= EXACT_TOLERANCE_S, None, "one prefill step per request"),
        _row(f"{kind}: max |step end - (start + model x noise)| (s)", 0.0, step_err, 0.0,
             step_err == 0.0, None, "c0 + c_prefill P + c_kv P + c_attn P^2"),
    ]
    return dict(kind=kind, rho=rho, mean_service_s=mean_s, second_moment_s2=second_s2,
                theory_s=theory_s, mean_ttft_s=estimate, std_error_s=se, z=z, served=served,
                ttft_is_sojourn=ttft_is_sojourn, lindley_max_err_s=lindley_err,
                step_max_err_s=step_err,
                passed=all(c["passed"] for c in checks) and ttft_is_sojourn, checks=checks)


def fixed_decode_check(engine_cls, *, k: int = 8, output: int = 200,
                       step: StepModel = StepModel(c0_ms=8.0, c_prefill_ms=0.3,
                                                   c_decode_ms=0.5, c_kv_ms=0.01),
                       block_size: int = 16, seed: int = 0) -> dict[str, Any]:
    """``k`` decode-only sequences step at the period the step model gives (module docstring)."""
    if step.cv != 0:
        raise ValueError(f"fixed_decode_check: step.cv = {step.cv!r}, must be 0 (no noise)")
    req = LlmRequests(np.zeros(k), np.ones(k, dtype=np.int64), np.full(k, output, np.int64))
    sched = SchedulerConfig(max_num_seqs=k, max_num_batched_tokens=max(k, 1),
                            block_size=block_size, num_blocks=k * -(-output // block_size))
    eng = _run(engine_cls, req, sched, step, seed, chunk_s=1.0 + output * step.c0_ms,
               queue_first=True)
    log = eng.step_log()
    n_steps = np.arange(1, output + 1)
    # Step 1: prefill k one-token prompts (P = k, K = k, A = k); step n: D = k, K = k n.
    want = dict(prefill_tokens=np.where(n_steps == 1, k, 0), decode_seqs=np.where(n_steps == 1,
                0, k), kv_tokens=k * n_steps, attn_pairs=np.where(n_steps == 1, k, 0))
    shape_ok = len(log["start_s"]) == output and all(
        np.array_equal(log[name], col) for name, col in want.items())
    dur_s = np.asarray([step.mean_ms(p, d, kv, a) / 1000.0 for p, d, kv, a in zip(
        want["prefill_tokens"], want["decode_seqs"], want["kv_tokens"], want["attn_pairs"])])
    if shape_ok:
        end_err = float(np.max(np.abs(log["end_s"] - (log["start_s"] + dur_s))))
        back_to_back = bool(np.array_equal(log["start_s"][1:], log["end_s"][:-1])
                            and log["start_s"][0] == 0.0)
        gaps = np.diff(log["end_s"])          # what every sequence sees between its tokens
        itl_err = float(np.max(np.abs(gaps - dur_s[1:]))) if output > 1 else 0.0
        hist = np.bincount(np.searchsorted(np.asarray(ITL_BOUNDS_S), gaps, side="left"),
                           minlength=len(ITL_BOUNDS_S) + 1) * k
        hist_ok = bool(np.array_equal(hist, eng.itl_counts))
    else:
        end_err = itl_err = math.inf
        back_to_back = hist_ok = False
    tot = eng.totals()
    served = bool((eng.outcome == SERVED).all() and np.all(eng.generated == output))
    counts_ok = (tot["itl_count"] == k * (output - 1) and tot["preemptions"] == 0
                 and tot["steps"] == output)
    period_s = float(dur_s[1]) if output > 1 else float("nan")
    tpot = (eng.finish_s - eng.first_token_s) / max(output - 1, 1)
    tpot_theory = float(dur_s[1:].mean()) if output > 1 else 0.0
    checks = [
        _row(f"decode k={k}: max |step end - (start + formula)| (s)", 0.0, end_err, 0.0,
             end_err == 0.0 and shape_ok and back_to_back, None,
             f"{output} steps, c0 + c_decode k + c_kv k n ms"),
        _row(f"decode k={k}: max |ITL - step duration| (s)", 0.0, itl_err, EXACT_TOLERANCE_S,
             itl_err <= EXACT_TOLERANCE_S and hist_ok and counts_ok and served, None,
             f"{k * (output - 1)} gaps"),
        _row(f"decode k={k}: mean TPOT (s)", tpot_theory, float(tpot.mean()),
             EXACT_TOLERANCE_S / max(tpot_theory, 1e-300),
             bool(np.all(np.abs(tpot - tpot_theory) <= EXACT_TOLERANCE_S)) and served),
    ]
    return dict(k=k, output=output, period_s=period_s, step_s=dur_s, max_end_err_s=end_err,
                max_itl_err_s=itl_err, back_to_back=back_to_back, histogram_ok=hist_ok,
                counts_ok=counts_ok, served=served,
                passed=all(c["passed"] for c in checks), checks=checks)
