"""An LLM engine's capacity learned online from its own series, and the fleet size it implies.

What vLLM exports is enough to recover its step time: each running sequence gets one token a
step, so the mean step time over a window is ``s = running / generation_tokens_rps`` per
replica (a sequence still in chunked prefill counts as running and emits nothing yet: ``s``
reads a little long, on the safe side). Its model is the engine's own (sim/llm/SPEC.md, the
``c0 + c_decode x D + c_prefill x P`` part of vLLM's iteration time): ``s = c0 + c_d x D +
c_p x (P x s)``, with ``D`` the running sequences and ``P x s`` the prompt tokens a step
prefills (prompt tokens per second times the step). It is fitted by non-negative least
squares over the windows seen, older ones forgotten geometrically.

Sizing ``n`` replicas for ``lam`` requests per second of mean prompt ``p`` and output ``o``
tokens: per replica ``G = lam o / n`` tokens per second and, by Little's law on tokens,
``D = G s``; so ``s = c0 / (1 - c_d G - c_p lam p / n)``, finite while that utilisation is
under 1. The fleet is the fewest replicas whose predicted step time is within the planned
share of the TPOT bound, whose share of first tokens over the TTFT bound fits its share of the
miss budget, whose running sequences fit ``max_num_seqs`` and whose KV use (KV ratio per
running sequence, learned) stays below where preemption starts (learned from preemptions
seen: the lowest KV use at which the engine preempted).

The first-token tail is learned too, as ``over = f0 + k x m(rho)``: ``m`` the M/M/1 waiting
tail ``rho exp(-(1 - rho) t / S)`` (``S`` a mean prompt's prefill, ``t`` what the bound leaves
after it, ``rho`` the engine's utilisation), which is also the prior until enough first tokens
are seen; ``f0`` the prompts too long to prefill within the bound at any load (a floor no fleet
size changes) and ``k`` how far the real queue's tail is from the M/M/1 one (prefills batched
under the token budget wait less than one at a time), fitted by NNLS over the recent windows
(the share of each window's first tokens over the bound against its per-replica rate, at the
current step model), weighted by their requests. TTFT and TPOT misses both count in
the run's miss budget (trimtab.controllers.core.budget), which raises the planned load after a
bad window.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import nnls

from trimtab.controllers.core.types import LatencyHistogram, Snapshot

N_COEF = 3                     # c0, c_d, c_p


@dataclass(frozen=True)
class LlmCapacityConfig:
    """The LLM model's tuning; the trimtab policy's config sets each by the same name."""

    llm_decay: float = 0.99          # weight kept by a window's fit terms per new window
    llm_min_windows: int = 4         # windows with tokens before the fit is used
    tpot_share: float = 0.6          # plan the mean step time at this share of the TPOT bound
    llm_max_utilisation: float = 0.85   # c_d G + c_p P at most (step time finite, queue short)
    seqs_fill: float = 0.9           # running sequences per replica at most this of max_num_seqs
    kv_limit: float = 0.9            # KV use planned at most (lowered by preemptions seen)
    ttft_share: float = 0.9          # share planned for slow first tokens of the misses the
                                     # SLO allows less those TPOT takes (its observed share)
    ttft_windows: int = 240          # recent windows the first-token tail is fitted on
    ttft_min_requests: float = 1000.0   # first tokens before the fitted tail replaces the prior


@dataclass(frozen=True)
class LlmFit:
    """The step-time model ``s = c0 + c_d D + c_p (P s)`` and the learned per-sequence terms."""

    c0_s: float
    c_d_s: float                     # per running sequence
    c_p_s: float                     # per prompt token prefilled in the step
    prompt_per_request: float
    output_per_request: float
    kv_per_seq: float | None         # KV use ratio per running sequence on one replica
    kv_limit: float
    ttft_floor: float | None = None  # fitted first-token tail (None: the M/M/1 prior)
    ttft_slope: float | None = None
    tpot_over: float = 0.0           # share of requests over the TPOT bound, seen so far

    def step_s(self, rps_per_replica: float) -> float:
        """Mean step time at this per-replica request rate (inf past saturation)."""
        util = self.utilisation(rps_per_replica)
        return self.c0_s / (1.0 - util) if util < 1.0 else math.inf

    def utilisation(self, rps_per_replica: float) -> float:
        return rps_per_replica * (self.c_d_s * self.output_per_request
                                  + self.c_p_s * self.prompt_per_request)

    def prefill_s(self) -> float:
        """A mean prompt's own prefill (its tokens plus one step's floor)."""
        return self.c0_s + self.c_p_s * self.prompt_per_request

    def ttft_over(self, rps_per_replica: float, bound_s: float) -> float:
        """Share of first tokens later than ``bound_s`` that the load adds: the M/M/1 tail,
        scaled by the fitted ``k`` once there is one."""
        prior = self.prior_ttft_over(rps_per_replica, bound_s)
        if self.ttft_slope is None or prior >= 1.0:
            return prior
        return self.ttft_slope * prior

    def prior_ttft_over(self, rps_per_replica: float, bound_s: float) -> float:
        """The M/M/1 waiting-time tail ``rho exp(-(1 - rho) t / S)``, ``S`` a mean prompt's
        prefill and ``t`` what the bound leaves after it (exponential prompt lengths)."""
        rho = self.utilisation(rps_per_replica)
        if rho >= 1.0:
            return 1.0
        service_s = self.prefill_s()
        slack_s = bound_s - service_s
        if slack_s <= 0:
            return 1.0
        return rho * math.exp(-(1.0 - rho) * slack_s / service_s)

    def running(self, rps_per_replica: float) -> float:
        """Running sequences per replica (Little's law on tokens: ``G x s``)."""
        return rps_per_replica * self.output_per_request * self.step_s(rps_per_replica)


@dataclass(frozen=True)
class LlmCapacityState:
    xtx: tuple[float, ...] = (0.0,) * (N_COEF * N_COEF)
    xty: tuple[float, ...] = (0.0,) * N_COEF
    windows: int = 0
    arrivals: float = 0.0            # decayed sums: requests, prompt and output tokens
    prompt_tokens: float = 0.0
    output_tokens: float = 0.0
    kv_area: float = 0.0             # decayed sums of KV use and running per replica
    running_area: float = 0.0
    preempt_kv: float | None = None  # lowest KV use of a window with preemptions
    # recent windows: (requests per ready replica per s, share of first tokens over the
    # TTFT bound, first tokens); the tail is refitted on them at the current step model
    ttft_windows: tuple[tuple[float, float, float], ...] = ()
    tpot_requests: float = 0.0       # decayed counts of finished requests and of those over
    tpot_misses: float = 0.0         # the TPOT bound


def is_llm(snapshot: Snapshot) -> bool:
    """Whether the snapshot is an LLM engine's (its token counters are read)."""
    return snapshot.generation_tokens_rps is not None and snapshot.engine_running is not None


def observe(state: LlmCapacityState, snapshot: Snapshot, cfg: LlmCapacityConfig,
            ttft_s: float | None = None, tpot_s: float | None = None) -> LlmCapacityState:
    """Fold one window in (one that served no token changes nothing); with ``ttft_s``, its
    share of first tokens over that bound joins the tail's windows; with ``tpot_s``, its
    requests over the TPOT bound are counted."""
    ready = snapshot.ready_replicas or 0
    gen = float(snapshot.generation_tokens_rps or 0.0)
    running = float(snapshot.engine_running or 0.0)
    prompt = float(snapshot.prompt_tokens_rps or 0.0)
    arrivals = float(snapshot.arrival_rate_rps or 0.0)
    if ready <= 0 or gen <= 0 or running <= 0 or not all(
            math.isfinite(v) for v in (gen, running, prompt, arrivals)):
        return state
    k = cfg.llm_decay
    d = running / ready
    s = running / gen
    x = np.array([1.0, d, prompt / ready * s])
    xtx = k * np.asarray(state.xtx).reshape(N_COEF, N_COEF) + np.outer(x, x)
    xty = k * np.asarray(state.xty) + x * s
    kv = snapshot.kv_cache_usage_ratio
    kv_area, running_area = state.kv_area * k, state.running_area * k
    if kv is not None and math.isfinite(kv):
        kv_area, running_area = kv_area + kv, running_area + d
    preempt_kv = state.preempt_kv
    if (snapshot.preemptions_rps or 0.0) > 0 and kv is not None and math.isfinite(kv):
        preempt_kv = kv if preempt_kv is None else min(preempt_kv, kv)
    w = snapshot.window_s
    tail = state.ttft_windows
    hist = snapshot.ttft
    if ttft_s is not None and hist is not None and hist.total > 0:
        tail = (tail + ((arrivals / ready, hist.count_over(ttft_s) / hist.total,
                         float(hist.total)),))[-cfg.ttft_windows:]
    tpot_requests, tpot_misses = k * state.tpot_requests, k * state.tpot_misses
    if tpot_s is not None and snapshot.tpot is not None:
        tpot_requests += snapshot.tpot.total
        tpot_misses += snapshot.tpot.count_over(tpot_s)
    return replace(state, xtx=tuple(xtx.ravel()), xty=tuple(xty), windows=state.windows + 1,
                   ttft_windows=tail, tpot_requests=tpot_requests, tpot_misses=tpot_misses,
                   arrivals=k * state.arrivals + arrivals * w,
                   prompt_tokens=k * state.prompt_tokens + prompt * w,
                   output_tokens=k * state.output_tokens + gen * w,
                   kv_area=kv_area, running_area=running_area, preempt_kv=preempt_kv)


def fit(state: LlmCapacityState, cfg: LlmCapacityConfig, ttft_s: float | None = None
        ) -> LlmFit | None:
    """The model, or None before ``llm_min_windows`` windows with tokens; with ``ttft_s`` the
    first-token tail is fitted on that bound."""
    if state.windows < cfg.llm_min_windows or state.arrivals <= 0:
        return None
    a = np.asarray(state.xtx).reshape(N_COEF, N_COEF)
    b = np.asarray(state.xty)
    # NNLS on the normal equations: the Cholesky factor stands in for the design matrix.
    reg = 1e-9 * max(float(np.trace(a)), 1e-12)
    try:
        upper = np.linalg.cholesky(a + reg * np.eye(N_COEF)).T
    except np.linalg.LinAlgError:
        return None
    coef, _ = nnls(upper, np.linalg.solve(upper.T, b))
    c0, c_d, c_p = (float(c) for c in coef)
    if c0 <= 0:       # all of the step put on the load: no floor to size against
        c0 = max(float(b[0] / a[0, 0]) * 0.1, 1e-6)
    kv_per_seq = state.kv_area / state.running_area if state.running_area > 0 else None
    limit = cfg.kv_limit if state.preempt_kv is None else min(cfg.kv_limit,
                                                              0.95 * state.preempt_kv)
    model = LlmFit(c0_s=c0, c_d_s=c_d, c_p_s=c_p,
                   prompt_per_request=state.prompt_tokens / state.arrivals,
                   output_per_request=max(state.output_tokens / state.arrivals, 1.0),
                   kv_per_seq=kv_per_seq, kv_limit=limit,
                   tpot_over=(state.tpot_misses / state.tpot_requests
                              if state.tpot_requests > 0 else 0.0))
    return model if ttft_s is None else _fit_tail(model, state.ttft_windows, ttft_s, cfg)


def _fit_tail(model: LlmFit, windows: tuple[tuple[float, float, float], ...], ttft_s: float,
              cfg: LlmCapacityConfig) -> LlmFit:
    """The first-token tail ``f0 + k m(rho)`` by weighted NNLS over ``windows`` (the model
    unchanged before ``ttft_min_requests`` first tokens)."""
    if not windows:
        return model
    per, share, weight = (np.asarray(c, dtype=float) for c in zip(*windows))
    if weight.sum() < cfg.ttft_min_requests:
        return model
    prior = np.array([model.prior_ttft_over(p, ttft_s) for p in per])
    design = np.column_stack([np.ones_like(prior), prior])
    root = np.sqrt(weight)
    coef, _ = nnls(design * root[:, None], share * root)
    return replace(model, ttft_floor=float(coef[0]), ttft_slope=float(coef[1]))


@dataclass(frozen=True)
class LlmTargets:
    """What a fleet size must meet: the TPOT bound, the TTFT bound (None: not bound) and the
    share of first tokens allowed over it, and the engine's sequence cap."""

    tpot_s: float
    ttft_s: float | None
    ttft_over: float
    max_num_seqs: int | None


def targets(model: LlmFit, tpot_s: float, ttft_s: float | None, slo_target: float,
            max_num_seqs: int | None, cfg: LlmCapacityConfig) -> LlmTargets:
    """The share of first tokens the load may push over the bound: ``ttft_share`` of the
    allowed misses less TPOT's observed share, less the floor no fleet size changes, and never
    under a fifth of it."""
    allowed = max(1.0 - slo_target - model.tpot_over, 0.2 * (1.0 - slo_target)) * cfg.ttft_share
    floor = model.ttft_floor or 0.0
    return LlmTargets(tpot_s=tpot_s, ttft_s=ttft_s,
                      ttft_over=max(allowed - floor, 0.2 * allowed), max_num_seqs=max_num_seqs)


def fits(model: LlmFit, rps: float, n: int, t: LlmTargets, cfg: LlmCapacityConfig) -> bool:
    """Whether ``n`` replicas serve ``rps`` within the planned step time, first-token tail,
    sequences and KV."""
    per = rps / n
    if model.utilisation(per) > cfg.llm_max_utilisation:
        return False
    if model.step_s(per) > cfg.tpot_share * t.tpot_s:
        return False
    if t.ttft_s is not None and model.ttft_over(per, t.ttft_s) > t.ttft_over:
        return False
    max_num_seqs = t.max_num_seqs
    running = model.running(per)
    if max_num_seqs and running > cfg.seqs_fill * max_num_seqs:
        return False
    return model.kv_per_seq is None or running * model.kv_per_seq <= model.kv_limit


def replicas_for(model: LlmFit, rps: float, t: LlmTargets, max_replicas: int,
                 cfg: LlmCapacityConfig) -> int:
    """The fewest replicas (at least 1, at most ``max_replicas``) that serve ``rps``."""
    if rps <= 0:
        return 1
    for n in range(1, max_replicas + 1):
        if fits(model, rps, n, t, cfg):
            return n
    return max_replicas


def concurrency_limit(model: LlmFit, max_num_seqs: int | None) -> int | None:
    """Per replica: the running sequences its KV cache holds below the preemption point, so
    excess load waits at the door instead of being preempted inside the engine."""
    if model.kv_per_seq is None or model.kv_per_seq <= 0:
        return max_num_seqs
    held = int(model.kv_limit / model.kv_per_seq)
    return max(1, min(held, max_num_seqs) if max_num_seqs else held)


def window_counts(snapshot: Snapshot, ttft_s: float | None, tpot_s: float | None
                  ) -> tuple[float, float] | None:
    """(requests, misses) of the window on the TTFT and TPOT bounds, counting shed and timed
    out (a request over both counts twice: an upper bound); None without the histograms."""
    hists: list[tuple[LatencyHistogram, float]] = [
        (h, bound) for h, bound in ((snapshot.ttft, ttft_s), (snapshot.tpot, tpot_s))
        if h is not None and bound is not None]
    if not hists:
        return None
    lost = ((snapshot.shed_rps or 0.0) + (snapshot.timed_out_rps or 0.0)) * snapshot.window_s
    total = max(h.total for h, _ in hists)
    return total + lost, sum(h.count_over(bound) for h, bound in hists) + lost
