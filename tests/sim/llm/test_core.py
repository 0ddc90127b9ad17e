"""The compiled engine on its own: the numba noise and step time equal the Python ones bit for
bit, closed forms at sizes the reference cannot reach, invariants, the prefix cache's hash
table, growth of the replica tables and the step log, and the errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tests.sim.llm import builders as B
from trimtab.sim.fleet.types import DRAINING, FAILED, PENDING, READY, SERVED, STOPPED
from trimtab.sim.llm import kernels as K
from trimtab.sim.llm.closed_form import fixed_decode_check, mg1_check
from trimtab.sim.llm.core import CompiledFleet
from trimtab.sim.llm.types import (ITL_BOUNDS_S, MASK64, LlmRequests, SchedulerConfig,
                                   StepModel, noise_factor)

SEEDS = (0, 1, 7919, -1, -12345, (1 << 63) - 1, (1 << 64) - 1, 1 << 63,
         0x9E3779B97F4A7C15, 123456789012345678901234567890)
CVS = (0.0, 1e-6, 0.00596, 0.1, 0.3, 1.0, 4.0)


def _inputs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    replicas = np.concatenate([np.arange(20), rng.integers(0, 2**31 - 1, n - 20)])
    steps = np.concatenate([np.arange(20), rng.integers(0, 2**40, n - 20)])
    return replicas.astype(np.int64), steps.astype(np.int64)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cv", CVS)
def test_noise_port_is_bit_for_bit(seed: int, cv: float) -> None:
    replicas, steps = _inputs(400, abs(seed) % 1000)
    got = K.noise_many(np.uint64(seed & MASK64), replicas, steps, cv)
    want = np.asarray([noise_factor(seed, int(r), int(s), cv) for r, s in zip(replicas, steps)])
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))
    if cv == 0.0:
        assert np.all(got == 1.0)
    else:
        assert len(np.unique(got)) == len(got)       # a real stream, not a constant


@pytest.mark.parametrize("cv", CVS)
def test_step_time_is_bit_for_bit(cv: float) -> None:
    """``mean_ms / 1000 * noise`` as the engine evaluates it (constants of the noise computed
    once) equals ``StepModel.mean_ms(...) / 1000.0 * noise_factor(...)`` in Python."""
    model = StepModel(c0_ms=25.0, c_prefill_ms=0.06, c_decode_ms=0.25, c_kv_ms=0.00005,
                      c_attn_ms=3.3e-7, cv=cv)
    rng = np.random.default_rng(3)
    n = 3000
    p, d = rng.integers(0, 8192, n), rng.integers(0, 256, n)
    k, a = rng.integers(0, 10**6, n), rng.integers(0, 2**40, n)
    replicas, steps = _inputs(n, 5)
    fleet = CompiledFleet(B.requests(2), B.sched(), model, seed=42)
    got = K.step_s_many(fleet._g.fst, np.uint64(42), replicas, steps, p, d, k, a)
    want = np.asarray([model.mean_ms(int(p[j]), int(d[j]), int(k[j]), int(a[j])) / 1000.0
                       * noise_factor(42, int(replicas[j]), int(steps[j]), cv)
                       for j in range(n)])
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))


# --------------------------------------------------------------------------- closed forms
MG1_CASES = B.MG1_CASES


@pytest.mark.parametrize("kw", MG1_CASES.values(), ids=MG1_CASES.keys())
def test_one_token_no_batching_is_mg1_at_scale(kw: dict) -> None:
    """200k requests (the reference's test takes 12k): a tighter Pollaczek-Khinchine check,
    and every step bit for bit the model's."""
    res = mg1_check(CompiledFleet, n=200_000, batches=40, **kw)
    assert res["served"] and res["ttft_is_sojourn"]
    assert res["lindley_max_err_s"] <= 1e-9 and res["step_max_err_s"] == 0.0
    assert abs(res["mean_ttft_s"] - res["theory_s"]) <= 4.0 * res["std_error_s"]
    assert res["std_error_s"] < 0.02 * res["theory_s"]
    assert res["passed"]


@pytest.mark.parametrize("k, output, c_kv_ms", [(8, 200, 0.01), (32, 500, 0.0), (1, 50, 0.0)])
def test_fixed_decode_batch_steps_at_the_formula(k: int, output: int, c_kv_ms: float) -> None:
    step = StepModel(c0_ms=8.0, c_prefill_ms=0.3, c_decode_ms=0.5, c_kv_ms=c_kv_ms)
    res = fixed_decode_check(CompiledFleet, k=k, output=output, step=step)
    assert res["passed"], [c for c in res["checks"] if not c["passed"]]


def test_one_request_alone_follows_the_model() -> None:
    """One request on an idle replica: a prefill step of P, then ``output - 1`` decode steps
    with the context growing by one token each; times summed in the engine's order."""
    model = B.step(c0_ms=7.0, c_prefill_ms=0.1, c_decode_ms=0.3, c_kv_ms=0.002, c_attn_ms=1e-5)
    p, o = 100, 6
    f = B.fleet(CompiledFleet, B.explicit([0.5], [p], [o]), step_model=model)
    B.drain(f)
    t = 0.5 + model.mean_ms(p, 0, p, p * p) / 1000.0
    assert f.first_token_s[0] == t
    for n in range(1, o):
        t = t + model.mean_ms(0, 1, p + n, 0) / 1000.0
    assert f.finish_s[0] == t and f.generated[0] == o and f.outcome[0] == SERVED
    assert f.totals()["steps"] == o and f.totals()["itl_count"] == o - 1


# --------------------------------------------------------------------------- invariants
INVARIANT_CASES = {
    "plain": dict(),
    "preempting": dict(sched=dict(num_blocks=24, max_num_seqs=16), prompt=(8, 120),
                       output=(1, 150), rate=6.0),
    "chunked-prefix": dict(sched=dict(chunked_prefill=True, prefix_caching=True,
                                      num_blocks=48, max_num_batched_tokens=64),
                           groups=3, rate=5.0),
    "queue-limits": dict(fleet=dict(limit=2, max_queue=4, queue_timeout_s=1.0), rate=12.0),
    "failing": dict(sched=dict(num_blocks=8), prompt=(8, 300)),
}


@pytest.mark.parametrize("name", INVARIANT_CASES)
def test_invariants(name: str) -> None:
    c = INVARIANT_CASES[name]
    n = 3000
    req = B.requests(n, c.get("rate", 4.0), c.get("prompt", (16, 200)),
                     c.get("output", (1, 60)), seed=11, prefix_groups=c.get("groups", 0))
    f = CompiledFleet(req, B.sched(**c.get("sched", {})), B.step(cv=0.2), seed=3,
                      record_steps=True, **c.get("fleet", {}))
    for _ in range(3):
        f.add_replica(0.0)
    finished = []
    for t in np.linspace(0.0, float(req.arrival_s[-1]) + 5000.0, 17)[1:]:
        f.advance(float(t))
        finished.append(f.take_finished())
    ids = np.concatenate(finished)
    tot, reps = f.totals(), f.replicas()
    done = f.outcome != PENDING
    # every request reached an outcome once, in take_finished, with a finish time
    assert done.all() and np.array_equal(np.sort(ids), np.arange(n))
    assert np.array_equal(np.isfinite(f.finish_s), done)
    counts = np.bincount(f.outcome, minlength=5)
    assert [counts[k] for k in (1, 2, 3, 4)] == [tot[k] for k in ("served", "shed",
                                                                   "timed_out", "failed")]
    assert tot["arrived"] == n == f.arrivals_done
    served = f.outcome == SERVED
    assert np.array_equal(f.generated[served], req.output_tokens[served])
    assert np.all(f.first_token_s[served] >= f.first_scheduled_s[served])
    assert np.all(f.finish_s[served] >= f.first_token_s[served])
    assert tot["output_tokens"] == f.generated.sum()
    made_one = f.generated > 0
    assert tot["itl_count"] == tot["output_tokens"] - made_one.sum() == f.itl_counts.sum()
    assert tot["prompt_tokens"] == req.prompt_tokens[made_one].sum()
    # each replica's counters add up, and it ends empty
    assert tot["steps"] == reps["steps"].sum() == len(f.step_log()["start_s"])
    assert tot["preemptions"] == reps["preemptions"].sum() == f.preemptions.sum()
    assert np.all(reps["blocks_used"] == 0) and np.all(reps["running"] + reps["waiting"] == 0)
    assert tot["area_queue"] <= tot["area_system"] and tot["area_busy"] <= tot["area_live"]
    log = f.step_log()
    assert np.all(log["end_s"] >= log["start_s"])
    assert log["running"].max() <= B.sched(**c.get("sched", {})).max_num_seqs
    # served-only runs finish in time order
    if counts[2] + counts[3] + counts[4] == 0:
        assert np.all(np.diff(f.finish_s[ids]) >= 0)


def test_finished_order_is_finish_time_order() -> None:
    req = B.requests(500, 8.0, seed=4)
    f = B.fleet(CompiledFleet, req, replicas=4, step_model=B.step(cv=0.3))
    B.drain(f)
    ids = f.take_finished()
    assert len(ids) == 500 and np.all(np.diff(f.finish_s[ids]) >= 0)
    assert len(f.take_finished()) == 0


def test_prefix_cache_reuses_a_finished_prompt() -> None:
    """The same 5-block prompt twice, apart: the second admission hits the blocks the first
    one keyed (at most (num_tokens - 1) // block_size of them)."""
    keys = [[11, 12, 13, 14, 15]] * 2
    req = B.explicit([0.0, 50.0], [80, 80], [3, 3], keys)
    f = B.fleet(CompiledFleet, req, sched_cfg=B.sched(prefix_caching=True))
    B.drain(f)
    tot = f.totals()
    assert tot["prefix_queries"] == 160 and tot["prefix_hits"] == 4 * 16
    assert f.totals()["prompt_tokens"] == 160


def test_prefix_cache_evicts_in_lru_order_last_block_first() -> None:
    """10 blocks; prompts of 65 tokens (4 keyed blocks + 1) with one output token, one at a
    time. A frees its blocks last first: LRU = [A3 A2 A1 A0]; B: [A3..A0 B3..B0]; C takes the
    two uncached blocks and evicts A3 A2 A1. A again hits only A0 (16 tokens) and evicts
    B3 B2 B1 for its 4 new blocks, so B hits only B0 and evicts C3 C2 C1, and C hits C0.
    Freed first block first, A would have lost A0 and hit nothing."""
    a, b, c = [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]
    req = B.explicit([0.0, 10.0, 20.0, 30.0, 40.0, 50.0], [65] * 6, [1] * 6,
                     [a, b, c, a, b, c])
    f = B.fleet(CompiledFleet, req, sched_cfg=B.sched(prefix_caching=True, num_blocks=10))
    hits = []
    for t in (5.0, 15.0, 25.0, 35.0, 45.0, 55.0):
        f.advance(t)
        hits.append(f.totals()["prefix_hits"])
    assert np.diff([0.0] + hits).tolist() == [0.0, 0.0, 0.0, 16.0, 16.0, 16.0]


def test_hash_table_matches_a_dict() -> None:
    """Insert, find and backward-shift delete on one replica's table, colliding keys
    included, against a Python dict."""
    req = B.requests(2)
    f = CompiledFleet(req, B.sched(prefix_caching=True, num_blocks=40), B.step())
    f.add_replica(0.0)
    P, ist = f._p, f._g.ist
    rng = np.random.default_rng(9)
    want: dict[int, int] = {}
    pool = list(rng.integers(-2**63, 2**63 - 1, 60)) + list(range(-5, 30))
    for it in range(4000):
        key = int(pool[int(rng.integers(0, len(pool)))])
        if key in want and rng.random() < 0.6:
            K._ht_delete(P, ist, 0, key)
            del want[key]
        elif key not in want and len(want) < 40:
            b = int(rng.integers(0, 40))
            K._ht_insert(P, ist, 0, key, b)
            want[key] = b
        for k in pool[:: 7 if it % 50 else 1]:
            assert K._ht_find(P, ist, 0, int(k)) == want.get(int(k), -1)
    assert np.sum(P.htb[0] >= 0) == len(want)


# --------------------------------------------------------------------------- lifecycle, growth
def test_tables_grow_past_their_first_size() -> None:
    """Nine replicas (tables start at 4) and over 4096 steps (the step log's first size)."""
    req = B.requests(400, 20.0, output=(20, 80), seed=2)
    f = CompiledFleet(req, B.sched(), B.step(), record_steps=True)
    ids = [f.add_replica(0.0) for _ in range(9)]
    assert ids == list(range(9))
    B.drain(f)
    tot = f.totals()
    assert tot["steps"] > 4096 and len(f.step_log()["replica"]) == tot["steps"]
    assert np.all(f.replicas()["steps"] > 0) and tot["served"] == 400


def test_lifecycle_states() -> None:
    req = B.requests(60, 5.0, output=(200, 300), seed=1)
    f = CompiledFleet(req, B.sched(num_blocks=1024), B.step())
    r0, r1, r2 = f.add_replica(0.0), f.add_replica(5.0), f.add_replica(100.0)
    f.advance(2.0)
    assert f.replicas()["state"].tolist() == [READY, 0, 0]
    f.remove_replica(r2)                          # STARTING: stopped at once
    f.advance(6.0)
    f.remove_replica(r0)                          # holds work: drains
    assert f.replicas()["state"].tolist() == [DRAINING, READY, STOPPED]
    B.drain(f)
    assert f.replicas()["state"].tolist() == [STOPPED, READY, STOPPED]
    assert set(f.replica_of[req.arrival_s < 5.0].tolist()) == {r0}
    assert set(f.replica_of[req.arrival_s > 6.0].tolist()) == {r1}
    assert np.all(f.outcome == SERVED)


def test_limit_zero_holds_everything_in_the_queue_until_raised() -> None:
    req = B.requests(30, 10.0, seed=6)
    f = CompiledFleet(req, B.sched(), B.step(), limit=0)
    f.add_replica(0.0)
    f.advance(float(req.arrival_s[-1]))
    assert np.all(f.replica_of == -1) and f.totals()["steps"] == 0
    f.set_limit(None)
    B.drain(f)
    assert np.all(f.outcome == SERVED)


def test_a_request_too_big_for_the_replica_fails() -> None:
    req = B.explicit([0.0, 1.0], [16 * 70, 20], [1, 1])
    f = B.fleet(CompiledFleet, req, sched_cfg=B.sched(num_blocks=64, max_num_batched_tokens=2000))
    B.drain(f)
    assert f.outcome.tolist() == [FAILED, SERVED] and f.finish_s[0] == 0.0


@pytest.mark.parametrize("call, match", [
    (lambda: CompiledFleet(B.requests(2), B.sched(), B.step(), router="random"), "router"),
    (lambda: CompiledFleet(B.requests(2), B.sched(), B.step(), limit=-1), "limit"),
    (lambda: CompiledFleet(B.requests(2), B.sched(), B.step(), max_queue=1.5), "max_queue"),
    (lambda: CompiledFleet(B.requests(2), B.sched(), B.step(), queue_timeout_s=math.inf),
     "queue_timeout_s"),
])
def test_bad_settings_are_named(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_calls_are_named() -> None:
    f = CompiledFleet(B.requests(2), B.sched(), B.step())
    f.advance(5.0)
    with pytest.raises(ValueError, match="until_s"):
        f.advance(4.0)
    with pytest.raises(ValueError, match="until_s"):
        f.advance(math.nan)
    with pytest.raises(ValueError, match="replica 0 does not exist"):
        f.remove_replica(0)
    with pytest.raises(ValueError, match="record_steps"):
        f.step_log()
    with pytest.raises(ValueError, match="queue_timeout_s"):
        f.set_queue_timeout_s(-1.0)


def test_memory_per_request_is_bounded() -> None:
    """The engine's own per-request state (beside the stream's arrays): at most 72 bytes
    (7 int32, 4 float64, the outcome, the finished log), so 10M requests take ~1 GB with
    the stream's 32."""
    n = 10_000
    req = LlmRequests(np.arange(n, dtype=float), np.full(n, 100), np.full(n, 10))
    f = CompiledFleet(req, SchedulerConfig(), StepModel(c0_ms=1.0))
    q = f._q
    own = q.rqi.nbytes + q.rqf.nbytes + q.outcome.nbytes + q.fin.nbytes
    assert own / n <= 72
    assert len(f.itl_counts) == len(ITL_BOUNDS_S) + 1
