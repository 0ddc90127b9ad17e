"""Analytic queueing results and independent oracles the simulator is checked against.

Every formula is from /work/shared/reference/queueing.md (kept in the docstrings): Erlang B/C,
Pollaczek–Khinchine, M/M/1/K, bulk service M/M^[K]/1, a truncated CTMC for batch time
s(b) = alpha + beta*b, M/G/1 with setup time, and the Kiefer–Wolfowitz / Lindley recursions.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.optimize import brentq


def _check_stable(rho: float, what: str) -> None:
    if not 0 <= rho < 1:
        raise ValueError(f"{what}: utilisation rho = {rho:.4g}, must be in [0, 1) for a "
                         "steady state")


def erlang_b(c: int, a: float) -> float:
    """Blocking probability of M/G/c/c with offered load ``a = lambda/mu``:
    B_0 = 1, B_k = a B_{k-1} / (k + a B_{k-1})."""
    if c < 0 or a < 0:
        raise ValueError(f"erlang_b: c = {c}, a = {a}; both must be >= 0")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


@dataclass(frozen=True)
class MMc:
    """M/M/c (Erlang C). Example: c = 4, lam = 3.2, mu = 1 gives C = 0.5964, Wq = 0.7455."""

    lam: float
    mu: float
    c: int

    def __post_init__(self) -> None:
        _check_stable(self.lam / (self.c * self.mu), f"M/M/{self.c}")

    @property
    def wait_probability(self) -> float:
        """C = P(wait > 0) = c B_c / (c - a (1 - B_c))."""
        a = self.lam / self.mu
        b = erlang_b(self.c, a)
        return self.c * b / (self.c - a * (1.0 - b))

    @property
    def wq_s(self) -> float:
        return self.wait_probability / (self.c * self.mu - self.lam)

    @property
    def w_s(self) -> float:
        return self.wq_s + 1.0 / self.mu

    @property
    def lq(self) -> float:
        return self.lam * self.wq_s

    def wait_tail(self, t_s: float) -> float:
        """P(Wq > t) = C exp(-(c mu - lam) t)."""
        return self.wait_probability * math.exp(-(self.c * self.mu - self.lam) * t_s)

    def wait_quantile_s(self, p: float) -> float:
        """Smallest t with P(Wq <= t) >= p (0 when p <= 1 - C). p95 in the example: 3.0987."""
        c_wait = self.wait_probability
        if p <= 1.0 - c_wait:
            return 0.0
        return math.log(c_wait / (1.0 - p)) / (self.c * self.mu - self.lam)


def mg1_wq_s(lam: float, mean_s: float, second_moment_s2: float) -> float:
    """Pollaczek–Khinchine: Wq = lam E[S^2] / (2 (1 - rho))."""
    rho = lam * mean_s
    _check_stable(rho, "M/G/1")
    return lam * second_moment_s2 / (2.0 * (1.0 - rho))


def md1_wq_s(lam: float, mu: float) -> float:
    """M/D/1: Wq = rho / (2 mu (1 - rho)); rho = 0.8, mu = 1 gives 2.000."""
    return mg1_wq_s(lam, 1.0 / mu, 1.0 / mu**2)


def mm1_wq_s(lam: float, mu: float) -> float:
    """M/M/1: Wq = rho / (mu - lam); rho = 0.8, mu = 1 gives 4.000."""
    return mg1_wq_s(lam, 1.0 / mu, 2.0 / mu**2)


def mm1k_blocking(lam: float, mu: float, k: int) -> float:
    """M/M/1/K (K in the system, one in service): P_K = (1 - rho) rho^K / (1 - rho^(K+1))."""
    rho = lam / mu
    if math.isclose(rho, 1.0):
        return 1.0 / (k + 1)
    return (1.0 - rho) * rho**k / (1.0 - rho ** (k + 1))


@dataclass(frozen=True)
class BulkResult:
    wq_s: float
    w_s: float
    p_idle: float
    r: float = math.nan


def bulk_mmk1(lam: float, mu: float, k: int) -> BulkResult:
    """M/M^[K]/1, greedy batches of up to K, batch time Exp(mu) whatever its size.

    r is the root in (0, 1) of mu z^(K+1) - (lam + mu) z + lam = 0; C = 1/(mu/lam + 1/(1-r));
    P(idle) = mu C / lam, Lq = C r / (1 - r)^2. Example K = 8, lam = 6, mu = 1: r = 0.93566,
    Wq = 2.3980, W = 3.3980, P(idle) = 0.01061.
    """
    _check_stable(lam / (k * mu), f"M/M^[{k}]/1")

    def f(z: float) -> float:
        return mu * z ** (k + 1) - (lam + mu) * z + lam

    # f(0) = lam > 0 and f'(1) = K mu - lam > 0 with f(1) = 0, so f < 0 just below 1.
    hi = 1.0 - 1e-12
    while f(hi) >= 0:
        hi = 1.0 - (1.0 - hi) * 10
    r = brentq(f, 0.0, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    c_const = 1.0 / (mu / lam + 1.0 / (1.0 - r))
    lq = c_const * r / (1.0 - r) ** 2
    wq = lq / lam
    return BulkResult(wq_s=wq, w_s=wq + 1.0 / mu, p_idle=mu * c_const / lam, r=r)


def batch_ctmc(lam: float, alpha_s: float, beta_s: float, k: int,
               max_waiting: int | None = None) -> BulkResult:
    """Greedy batcher with exponential batch time of mean s(b) = alpha + beta b: the truncated
    CTMC on {idle} and (b in service, n waiting), solved with a sparse LU.

    Example alpha = 0.5, beta = 0.1, K = 8, lam = 4: Wq = 1.4711, W = 2.5485, P(idle) = 0.0564.
    Arrivals at the truncation ``max_waiting`` are lost; the default is large enough that the
    mass there is below 1e-12 for rho <= 0.9 (checked, ValueError otherwise).
    """
    capacity_rps = k / (alpha_s + beta_s * k)
    _check_stable(lam / capacity_rps, f"batch CTMC (capacity {capacity_rps:.4g}/s)")
    if max_waiting is None:
        rho = lam / capacity_rps
        max_waiting = int(min(20000, max(400, 60 * k / (1.0 - rho))))
    n_w = max_waiting + 1
    n_states = 1 + k * n_w

    def idx(b: np.ndarray | int, n: np.ndarray | int) -> np.ndarray | int:
        return 1 + (b - 1) * n_w + n

    rows, cols, rates = [0], [idx(1, 0)], [lam]          # idle -> (1, 0)
    b = np.repeat(np.arange(1, k + 1), n_w)
    n = np.tile(np.arange(n_w), k)
    src = idx(b, n)
    up = n < max_waiting                                  # arrival: n -> n + 1
    rows.extend(src[up]); cols.extend(idx(b[up], n[up] + 1)); rates.extend([lam] * int(up.sum()))
    done = 1.0 / (alpha_s + beta_s * b)                   # completion
    take = np.minimum(n, k)
    dst = np.where(n == 0, 0, idx(np.maximum(take, 1), n - take))
    rows.extend(src); cols.extend(dst); rates.extend(done)
    q = sp.coo_matrix((rates, (rows, cols)), shape=(n_states, n_states)).tocsr()
    q = q - sp.diags(np.asarray(q.sum(axis=1)).ravel())
    # pi Q = 0 with sum(pi) = 1: solve Q^T pi = 0 with the first equation replaced.
    a = q.T.tolil()
    a[0, :] = np.ones(n_states)
    rhs = np.zeros(n_states)
    rhs[0] = 1.0
    pi = spla.spsolve(a.tocsc(), rhs)
    tail = pi[idx(b[n == max_waiting], max_waiting)].sum()
    if tail > 1e-12:
        raise ValueError(f"batch CTMC: {tail:.3g} of the mass sits at the truncation "
                         f"max_waiting = {max_waiting}; raise it")
    busy = pi[1:]
    lq = float(np.dot(busy, n))
    in_service = float(np.dot(busy, b))
    return BulkResult(wq_s=lq / lam, w_s=(lq + in_service) / lam, p_idle=float(pi[0]))


def setup_time_response_s(lam: float, mean_s: float, second_moment_s2: float,
                          setup_mean_s: float, setup_second_moment_s2: float) -> float:
    """M/G/1 with setup (the server switches off when empty):
    E[T] = E[T_M/G/1] + (2 E[I] + lam E[I^2]) / (2 (1 + lam E[I])).
    Examples (mu = 1, exponential service, fixed I): lam = 0.5, I = 2 gives 3.500;
    lam = 0.8, I = 5 gives 8.000."""
    t_mg1 = mg1_wq_s(lam, mean_s, second_moment_s2) + mean_s
    return t_mg1 + (2 * setup_mean_s + lam * setup_second_moment_s2) / (
        2 * (1 + lam * setup_mean_s))


def kiefer_wolfowitz_waits(arrival_s: np.ndarray, service_s: np.ndarray, c: int) -> np.ndarray:
    """FCFS c-server waits from a heap of server-free times (Kiefer–Wolfowitz)."""
    free = [0.0] * c
    waits = np.empty(len(arrival_s))
    for i, (a, s) in enumerate(zip(arrival_s.tolist(), service_s.tolist())):
        f = free[0]
        start = f if f > a else a
        waits[i] = start - a
        heapq.heapreplace(free, start + s)
    return waits


def lindley_waits(arrival_s: np.ndarray, service_s: np.ndarray) -> np.ndarray:
    """One server: W_{n+1} = max(0, W_n + S_n - (A_{n+1} - A_n))."""
    waits = np.empty(len(arrival_s))
    w = 0.0
    prev_a = prev_s = None
    for i, (a, s) in enumerate(zip(arrival_s.tolist(), service_s.tolist())):
        if prev_a is not None:
            w = max(0.0, w + prev_s - (a - prev_a))
        waits[i] = w
        prev_a, prev_s = a, s
    return waits
