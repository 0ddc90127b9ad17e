"""The compiled engine (core.CompiledFleet) equals the reference (reference.ReferenceFleet)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from trimtab.sim.llm.core import CompiledFleet
from trimtab.sim.llm.reference import ReferenceFleet
from trimtab.sim.llm.profile import load_step_model
from trimtab.sim.llm.types import LlmRequests, SchedulerConfig, StepModel, block_keys
from trimtab.sim.traces.config import LengthsConfig
from trimtab.sim.traces.lengths import with_lengths

PER_REQUEST = ("outcome", "replica_of", "first_scheduled_s", "first_token_s", "finish_s",
               "preemptions", "generated", "itl_counts")
INT_TOTALS = ("steps", "prompt_tokens", "output_tokens", "preemptions", "prefix_queries",
              "prefix_hits", "itl_count", "served", "shed", "timed_out", "failed", "arrived")


@dataclass
class Case:
    """One configuration and the calls made on both engines (``script``: (verb, arg) pairs;
    verbs: advance, add, remove, limit, timeout)."""

    n: int = 150
    rate_rps: float = 2.0
    prompt: tuple[int, int] = (10, 400)
    output: tuple[int, int] = (1, 60)
    sched: dict = field(default_factory=dict)
    step: dict = field(default_factory=dict)
    fleet: dict = field(default_factory=dict)
    replicas: tuple[float, ...] = (0.0,)
    script: tuple = (("advance", 20.0), ("advance", 45.5), ("advance", 1e5))
    prefix_groups: int = 0        # > 0: prompts share hash-id prefixes among this many groups
    seed: int = 1
    azure: bool = False           # lengths drawn from the bundled Azure conversation trace


def build_requests(c: Case) -> LlmRequests:
    rng = np.random.default_rng(c.seed)
    arrival = np.cumsum(rng.exponential(1.0 / c.rate_rps, c.n))
    arrival[5:9] = arrival[5]                     # simultaneous arrivals
    prompt = rng.integers(c.prompt[0], c.prompt[1] + 1, c.n)
    output = rng.integers(c.output[0], c.output[1] + 1, c.n)
    if c.azure:
        cfg = LengthsConfig(path="traces/azure_llm_conv.csv", max_total_tokens=4096)
        prompt, output, _, _ = with_lengths(c.n, cfg, c.seed, Path("."))
    if not c.prefix_groups:
        return LlmRequests(arrival, prompt, output)
    hash_block = 32
    ids = []
    for i in range(c.n):
        g = int(rng.integers(0, c.prefix_groups))
        shared = int(rng.integers(0, 8))          # hash blocks shared within the group
        nh = -(-int(prompt[i]) // hash_block)
        ids.append([g * 1000 + k if k < shared else -(i * 1000 + k) for k in range(nh)])
    off, keys = block_keys(ids, prompt, c.sched.get("block_size", 16), hash_block)
    return LlmRequests(arrival, prompt, output, off, keys)


SMALL = dict(max_num_seqs=8, max_num_batched_tokens=512, num_blocks=200, block_size=16)
NOISE = dict(c0_ms=20.0, c_prefill_ms=0.05, c_decode_ms=0.3, c_kv_ms=0.0002, c_attn_ms=1e-6,
             cv=0.3)
PLAIN = dict(NOISE, cv=0.0)
TIGHT = dict(max_num_seqs=16, max_num_batched_tokens=256, num_blocks=24, block_size=8)
LIFECYCLE = (("advance", 10.0), ("add", 25.0), ("add", 10.0), ("advance", 30.0),
             ("remove", 0), ("limit", 1), ("advance", 41.25), ("timeout", 1.5),
             ("advance", 50.0), ("remove", 2), ("limit", None), ("add", 50.0),
             ("timeout", None), ("advance", 70.0), ("remove", 3), ("add", 90.0),
             ("advance", 1e5))

CASES = {
    "plain": Case(sched=SMALL, step=PLAIN),
    "noise": Case(sched=SMALL, step=NOISE),
    "chunked": Case(sched=dict(SMALL, chunked_prefill=True, max_num_batched_tokens=128),
                    step=NOISE),
    "preempt_heavy": Case(sched=TIGHT, step=NOISE, replicas=(0.0, 0.0), rate_rps=4.0,
                          prompt=(5, 90), output=(1, 120)),
    "preempt_heavy_chunked": Case(sched=dict(TIGHT, chunked_prefill=True,
                                             max_num_batched_tokens=40),
                                  step=NOISE, replicas=(0.0, 0.0), rate_rps=4.0,
                                  prompt=(5, 90), output=(1, 120)),
    "two_seqs": Case(sched=dict(SMALL, max_num_seqs=2), step=NOISE, rate_rps=0.8),
    "failures": Case(sched=dict(SMALL, num_blocks=20, max_num_batched_tokens=300),
                     step=PLAIN, replicas=(0.0, 0.0, 5.0), prompt=(10, 420),
                     script=(("advance", 15.0), ("remove", 1), ("advance", 1e5))),
    "lifecycle": Case(sched=SMALL, step=NOISE, replicas=(0.0, 0.0), rate_rps=6.0, n=250,
                      fleet=dict(max_queue=6), script=LIFECYCLE),
    "limit_timeout_shed": Case(sched=SMALL, step=NOISE, replicas=(0.0, 3.0), rate_rps=6.0,
                               fleet=dict(limit=3, max_queue=5, queue_timeout_s=2.0),
                               script=(("advance", 12.0), ("limit", 0), ("advance", 20.0),
                                       ("limit", 5), ("timeout", 0.5), ("advance", 1e5))),
    "lifecycle_chunked_tight": Case(sched=dict(TIGHT, chunked_prefill=True), step=NOISE,
                                    replicas=(0.0, 2.0), rate_rps=3.0, prompt=(5, 90),
                                    fleet=dict(limit=6), script=LIFECYCLE),
    "prefix": Case(sched=dict(SMALL, prefix_caching=True, num_blocks=60), step=NOISE,
                   replicas=(0.0, 0.0), prefix_groups=3),
    "prefix_chunked_preempt": Case(sched=dict(TIGHT, prefix_caching=True, num_blocks=40,
                                              chunked_prefill=True, max_num_batched_tokens=64),
                                   step=NOISE, replicas=(0.0, 0.0), rate_rps=4.0,
                                   prompt=(5, 150), output=(1, 80), prefix_groups=2),
    "prefix_aware": Case(sched=dict(SMALL, prefix_caching=True, num_blocks=80), step=NOISE,
                         replicas=(0.0, 0.0, 0.0), rate_rps=5.0, prefix_groups=4,
                         fleet=dict(router="prefix_aware"), script=LIFECYCLE),
    # The bench's configuration, small: vLLM's defaults, Azure lengths, the fitted profile,
    # KV pressure from fewer blocks.
    "azure_fitted": Case(n=400, rate_rps=3.0, azure=True, replicas=(0.0, 0.0, 0.0),
                         sched=dict(num_blocks=600), step=dict(vars(load_step_model(
                             "llama2-70b-a100-tp2")))),
    "azure_chunked_prefix": Case(n=300, rate_rps=3.0, azure=True, replicas=(0.0, 0.0),
                                 prefix_groups=5, fleet=dict(router="prefix_aware"),
                                 sched=dict(num_blocks=500, chunked_prefill=True,
                                            max_num_batched_tokens=1024, prefix_caching=True),
                                 step=NOISE),
    "prefix_aware_no_cache": Case(sched=SMALL, step=NOISE, replicas=(0.0, 0.0, 0.0),
                                  rate_rps=5.0, prefix_groups=4,
                                  fleet=dict(router="prefix_aware")),
}


def random_case(seed: int) -> Case:
    """A configuration drawn at random: features on and off, lifecycle calls in between."""
    rng = np.random.default_rng(1000 + seed)
    bs = int(rng.choice([4, 8, 16]))
    sched = dict(max_num_seqs=int(rng.integers(1, 12)), block_size=bs,
                 max_num_batched_tokens=int(rng.integers(16, 600)),
                 num_blocks=int(rng.integers(6, 120)), chunked_prefill=bool(rng.random() < 0.5),
                 prefix_caching=bool(rng.random() < 0.5))
    step = dict(NOISE, cv=float(rng.choice([0.0, 0.3])), c0_ms=float(rng.uniform(5, 40)))
    fleet = dict(router=str(rng.choice(["least_outstanding", "prefix_aware"])))
    if rng.random() < 0.5:
        fleet["max_queue"] = int(rng.integers(0, 8))
    if rng.random() < 0.5:
        fleet["queue_timeout_s"] = float(rng.uniform(0.2, 5.0))
    if rng.random() < 0.5:
        fleet["limit"] = int(rng.integers(0, 6))
    script, t, n_rep = [], 0.0, int(rng.integers(1, 4))
    for _ in range(int(rng.integers(3, 12))):
        u = rng.random()
        if u < 0.4:
            t += float(rng.uniform(0.0, 15.0))
            script.append(("advance", t))
        elif u < 0.6:
            script.append(("add", t + float(rng.choice([0.0, -1.0, rng.uniform(0, 10)]))))
            n_rep += 1
        elif u < 0.75:
            script.append(("remove", int(rng.integers(0, n_rep))))
        elif u < 0.9:
            script.append(("limit", None if rng.random() < 0.3 else int(rng.integers(0, 6))))
        else:
            script.append(("timeout", None if rng.random() < 0.3 else float(rng.uniform(0, 3))))
    script.append(("add", t))
    script.append(("advance", 1e5))
    return Case(n=int(rng.integers(50, 250)), rate_rps=float(rng.uniform(0.5, 8.0)),
                prompt=(1, int(rng.integers(20, 500))), output=(1, int(rng.integers(2, 100))),
                sched=sched, step=step, fleet=fleet, replicas=(0.0,) * n_rep,
                script=tuple(script), prefix_groups=int(rng.integers(0, 4)), seed=seed)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shape and values, bit for bit (NaN equal to NaN)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return np.array_equal(a.astype(np.float64), b.astype(np.float64), equal_nan=True)
    return np.array_equal(a, b)


def compare(ref: ReferenceFleet, cmp: CompiledFleet, where: str) -> None:
    for name in PER_REQUEST:
        a, b = getattr(ref, name), getattr(cmp, name)
        assert same(a, b), f"{where}: {name} differs at {np.flatnonzero(a != b)[:10]}"
    assert same(ref.take_finished(), cmp.take_finished()), f"{where}: take_finished"
    assert ref.now_s == cmp.now_s and ref.arrivals_done == cmp.arrivals_done, where
    tr, tc = ref.totals(), cmp.totals()
    assert set(tr) == set(tc), f"{where}: totals keys {set(tr) ^ set(tc)}"
    for k in tr:
        if k in INT_TOTALS:
            assert tr[k] == tc[k], f"{where}: totals[{k}] {tr[k]} != {tc[k]}"
        else:
            assert tc[k] == pytest.approx(tr[k], rel=1e-9, abs=1e-12), f"{where}: {k}"
    rr, rc = ref.replicas(), cmp.replicas()
    assert set(rr) == set(rc)
    for k in rr:
        assert same(rr[k], rc[k]), f"{where}: replicas()[{k}] {rr[k]} != {rc[k]}"
    sr, sc = ref.step_log(), cmp.step_log()
    assert set(sr) == set(sc)
    for k in sr:
        assert same(sr[k], sc[k]), f"{where}: step_log()[{k}]"


def run_both(c: Case) -> tuple[ReferenceFleet, CompiledFleet]:
    req = build_requests(c)
    sched, step = SchedulerConfig(**c.sched), StepModel(**c.step)
    kw = dict(seed=c.seed * 7919, record_steps=True, **c.fleet)
    ref, cmp = ReferenceFleet(req, sched, step, **kw), CompiledFleet(req, sched, step, **kw)
    for ready_s in c.replicas:
        assert ref.add_replica(ready_s) == cmp.add_replica(ready_s)
    compare(ref, cmp, "after the first replicas")
    for verb, arg in c.script:
        if verb == "advance":
            ref.advance(arg)
            cmp.advance(arg)
        elif verb == "add":
            assert ref.add_replica(arg) == cmp.add_replica(arg)
        elif verb == "remove":
            ref.remove_replica(arg)
            cmp.remove_replica(arg)
        elif verb == "limit":
            ref.set_limit(arg)
            cmp.set_limit(arg)
        elif verb == "timeout":
            ref.set_queue_timeout_s(arg)
            cmp.set_queue_timeout_s(arg)
        else:
            raise AssertionError(f"unknown verb {verb!r}")
        compare(ref, cmp, f"after {verb}({arg})")
    return ref, cmp


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_equals_reference(name: str) -> None:
    ref, cmp = run_both(CASES[name])
    t = cmp.totals()
    assert t["steps"] > 50, "the case must exercise the engine"
    assert t["arrived"] == CASES[name].n


@pytest.mark.parametrize("seed", range(24))
def test_compiled_equals_reference_random(seed: int) -> None:
    c = random_case(seed)
    ref, cmp = run_both(c)
    assert cmp.totals()["arrived"] == c.n


def test_compare_sees_one_ulp() -> None:
    """The comparison is bit for bit: one ulp in one finish time fails it."""
    c = CASES["noise"]
    ref, cmp = run_both(c)
    i = int(np.flatnonzero(np.isfinite(cmp.finish_s))[0])
    cmp.finish_s[i] = np.nextafter(cmp.finish_s[i], np.inf)
    with pytest.raises(AssertionError, match="finish_s"):
        compare(ref, cmp, "one ulp")


def test_the_cases_reach_what_they_are_for() -> None:
    """Each feature is exercised by some case (otherwise equality proves nothing about it)."""
    seen: dict[str, float] = {}
    for name in ("preempt_heavy", "failures", "limit_timeout_shed", "prefix",
                 "lifecycle", "chunked"):
        _, cmp = run_both(CASES[name])
        seen[name + ".preemptions"] = cmp.totals()["preemptions"]
        seen[name + ".failed"] = cmp.totals()["failed"]
        seen[name + ".shed"] = cmp.totals()["shed"]
        seen[name + ".timed_out"] = cmp.totals()["timed_out"]
        seen[name + ".prefix_hits"] = cmp.totals()["prefix_hits"]
        seen[name + ".stopped"] = float(np.sum(cmp.replicas()["state"] == 3))
        log = cmp.step_log()
        seen[name + ".chunks"] = float(np.sum((log["prefill_tokens"] > 0)
                                              & (log["decode_seqs"] > 0)))
    for key in ("preempt_heavy.preemptions", "failures.failed", "limit_timeout_shed.shed",
                "limit_timeout_shed.timed_out", "prefix.prefix_hits", "lifecycle.stopped",
                "lifecycle.shed", "lifecycle.timed_out",
                "failures.stopped", "chunked.chunks"):
        assert seen[key] > 0, f"{key} = 0: the case does not exercise it"
