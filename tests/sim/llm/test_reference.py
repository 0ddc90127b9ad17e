"""The reference LLM engine, one SPEC.md rule per hand-worked case, then invariants of random
small runs (hypothesis). Times: a 10 ms step unless a case says otherwise; t_k = k * 10 ms is
the end of the k-th step."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sim.llm.builders import drain, explicit, fleet, requests, sched, step
from trimtab.sim.fleet.types import (DRAINING, FAILED, PENDING, READY, SERVED, SHED, STARTING,
                                     STOPPED, TIMED_OUT)
from trimtab.sim.llm.reference import ReferenceFleet
from trimtab.sim.llm.types import ITL_BOUNDS_S, noise_factor

TEN_MS = step(c0_ms=10.0, c_prefill_ms=0.0, c_decode_ms=0.0, c_kv_ms=0.0)
ONE_S = step(c0_ms=1000.0, c_prefill_ms=0.0, c_decode_ms=0.0, c_kv_ms=0.0)
BOUNDS = np.asarray(ITL_BOUNDS_S)


def t(k: float) -> float:
    return pytest.approx(0.01 * k, abs=1e-12)


def ref(reqs, replicas=1, *, sched_cfg=None, step_model=TEN_MS, **kw) -> ReferenceFleet:
    return fleet(ReferenceFleet, reqs, replicas, sched_cfg=sched_cfg, step_model=step_model,
                 record_steps=True, record_gaps=True, **kw)


def log_col(f: ReferenceFleet, name: str) -> list:
    return f.step_log()[name].tolist()


# --------------------------------------------------------------------------- steps
def test_decode_and_prefill_terms_of_each_step():
    """Prompts 3 and 5 (outputs 3, 2) start together. Step 1 prefills both: P = 8, K = 8,
    A = 3*3 + 5*5 = 34. Step 2 decodes both: D = 2, K = 4 + 6. Step 3 decodes the first:
    K = 5. With c0 10, c_prefill 1, c_decode 2, c_kv 0.1, c_attn 0.01 (ms): 19.14, 15, 12.5."""
    model = step(c0_ms=10.0, c_prefill_ms=1.0, c_decode_ms=2.0, c_kv_ms=0.1, c_attn_ms=0.01)
    f = ref(explicit([0, 0], [3, 5], [3, 2]), step_model=model, queue_first=True)
    drain(f)
    assert log_col(f, "prefill_tokens") == [8, 0, 0]
    assert log_col(f, "decode_seqs") == [0, 2, 1]
    assert log_col(f, "kv_tokens") == [8, 10, 5]
    assert log_col(f, "attn_pairs") == [34, 0, 0]
    assert log_col(f, "scheduled") == [2, 2, 1]
    log = f.step_log()
    assert (log["end_s"] - log["start_s"]).tolist() == pytest.approx([0.01914, 0.015, 0.0125])
    assert f.first_token_s.tolist() == [log["end_s"][0]] * 2
    assert f.finish_s.tolist() == [log["end_s"][2], log["end_s"][1]]
    assert f.generated.tolist() == [3, 2]
    assert f.totals()["itl_count"] == 3          # (3 - 1) + (2 - 1)


@pytest.mark.parametrize("output", [1, 2, 7])
def test_a_sequence_finishes_after_exactly_its_output_tokens(output):
    f = ref(explicit([0], [5], [output]))
    drain(f)
    tot = f.totals()
    assert f.outcome[0] == SERVED and f.generated[0] == output
    assert tot["steps"] == output and tot["output_tokens"] == output
    assert tot["itl_count"] == output - 1 and len(f.gaps(0)) == output - 1
    assert f.finish_s[0] == t(output) and f.first_token_s[0] == t(1)


def test_noise_is_the_factor_of_the_replica_and_its_step_index():
    model = step(cv=0.4)
    f = fleet(ReferenceFleet, requests(n=12, rate_rps=50.0, seed=3), 2, step_model=model,
              seed=7, record_steps=True)
    drain(f)
    log = f.step_log()
    seen = {0: 0, 1: 0}
    for i in range(len(log["replica"])):
        r = int(log["replica"][i])
        mean_ms = model.mean_ms(int(log["prefill_tokens"][i]), int(log["decode_seqs"][i]),
                                int(log["kv_tokens"][i]), int(log["attn_pairs"][i]))
        want = log["start_s"][i] + mean_ms / 1000.0 * noise_factor(7, r, seen[r], 0.4)
        assert log["end_s"][i] == want           # bit for bit: the SPEC's evaluation order
        seen[r] += 1
    assert len(set(np.round(log["end_s"] - log["start_s"], 9))) > 3     # the noise is there


# --------------------------------------------------------------------------- prefill
def test_without_chunking_a_prompt_over_budget_blocks_the_queue_then_fails():
    """Budget 8. A (prompt 4, 3 tokens) runs; B (prompt 20) cannot fit and holds C (prompt 2)
    behind it (first come first served; C alone would fit at t1). When A leaves at t3, B can
    never be admitted: FAILED at t3, and C is admitted in the same step."""
    f = ref(explicit([0, 0.001, 0.002], [4, 20, 2], [3, 1, 1]),
            sched_cfg=sched(max_num_batched_tokens=8))
    drain(f)
    assert f.outcome.tolist() == [SERVED, FAILED, SERVED]
    assert f.finish_s[1] == t(3) and np.isnan(f.first_scheduled_s[1])
    assert f.first_scheduled_s[2] == t(3) and f.finish_s[2] == t(4)
    assert f.take_finished().tolist() == [0, 1, 2]
    assert f.totals()["failed"] == 1 and f.replica_of[1] == 0


def test_chunked_prefill_splits_a_prompt_and_shares_the_budget():
    """Budget 8, chunked. A (prompt 20) and B (prompt 6), 2 tokens each. Step 1: A 8.
    Step 2: A 8 (context 16). Step 3: A's last 4 then B's first 4. Step 4: A decodes, B's
    last 2 (B makes its first token). Step 5: B decodes."""
    f = ref(explicit([0, 0], [20, 6], [2, 2]),
            sched_cfg=sched(max_num_batched_tokens=8, chunked_prefill=True), queue_first=True)
    drain(f)
    assert log_col(f, "prefill_tokens") == [8, 8, 8, 2, 0]
    assert log_col(f, "decode_seqs") == [0, 0, 0, 1, 1]
    assert log_col(f, "kv_tokens") == [8, 16, 24, 27, 7]
    assert log_col(f, "attn_pairs") == [64, 128, 4 * 20 + 4 * 4, 2 * 6, 0]
    assert log_col(f, "scheduled") == [1, 1, 2, 2, 1]
    assert f.first_scheduled_s.tolist() == [0.0, t(2)]
    assert f.first_token_s.tolist() == [t(3), t(4)]
    assert f.finish_s.tolist() == [t(4), t(5)]


def test_prefill_of_one_token_counts_as_prefill_not_decode():
    """A one-token prompt's first step has new = 1 but nothing generated yet: P = 1, D = 0."""
    f = ref(explicit([0], [1], [2]))
    drain(f)
    assert log_col(f, "prefill_tokens") == [1, 0]
    assert log_col(f, "decode_seqs") == [0, 1]


# --------------------------------------------------------------------------- KV pressure
def test_kv_exhaustion_preempts_the_most_recently_admitted_and_recomputes_it():
    """Blocks of 4, two of them. A and B (prompt 3, 5 tokens each) take one block each. At
    step 3 A needs a second block: B (admitted after A) is preempted, its KV dropped. A ends
    at t5; B is readmitted at step 6 and recomputes all 5 tokens it has (3 + 2 generated),
    so its third token comes at t6, one gap of 40 ms after its second at t2."""
    f = ref(explicit([0, 0], [3, 3], [5, 5]),
            sched_cfg=sched(block_size=4, num_blocks=2, max_num_batched_tokens=64),
            queue_first=True)
    drain(f)
    assert f.preemptions.tolist() == [0, 1]
    assert f.totals()["preemptions"] == 1 and f.replicas()["preemptions"].tolist() == [1]
    assert log_col(f, "scheduled") == [2, 2, 1, 1, 1, 1, 1, 1]
    assert log_col(f, "waiting") == [0, 0, 1, 1, 1, 0, 0, 0]
    assert log_col(f, "prefill_tokens") == [6, 0, 0, 0, 0, 5, 0, 0]   # num_computed reset
    assert log_col(f, "blocks_used") == [2, 2, 2, 2, 2, 2, 2, 2]
    assert f.gaps(1).tolist() == pytest.approx([0.01, 0.04, 0.01, 0.01])
    assert f.gaps(0).tolist() == pytest.approx([0.01] * 4)
    assert f.finish_s.tolist() == [t(5), t(8)]
    tot = f.totals()
    assert tot["itl_count"] == 8 and f.itl_counts.sum() == 8
    assert tot["prompt_tokens"] == 6                    # the recompute is not a new prompt


def test_no_waiting_admission_in_a_step_that_preempted():
    """Blocks of 4, five of them, prefix caching. A (prompt 3), D and X (prompt 8, the same
    two keys) start together: 1 + 2 + 2 blocks. D computes first, so D's blocks get the keys
    and X's stay unkeyed. At step 2 D needs a third block: X is preempted (2 blocks free), D
    takes one. X could come back at once (its 8 prompt tokens hit D's blocks, it needs one
    block, one is free), but a step that preempted admits nothing: 2 scheduled, not 3."""
    f = ref(explicit([0, 0, 0], [3, 8, 8], [10, 10, 10], keys=[[], [11, 12], [11, 12]]),
            sched_cfg=sched(block_size=4, num_blocks=5, prefix_caching=True,
                            max_num_batched_tokens=64), queue_first=True)
    f.advance(0.015)
    log = f.step_log()
    assert log["scheduled"].tolist() == [3, 2]
    assert log["waiting"].tolist() == [0, 1] and log["blocks_used"].tolist() == [5, 4]
    assert f.preemptions.tolist() == [0, 0, 1]
    assert f.totals()["prefix_queries"] == 3 + 8 + 8       # X not readmitted yet


def test_a_request_too_big_for_the_cache_fails_and_the_next_is_served():
    """Blocks of 4, two of them: a 9-token prompt needs three. It fails when first
    considered (t = 0, the arrival); the next request is served."""
    f = ref(explicit([0, 0.5], [9, 4], [1, 2]), sched_cfg=sched(block_size=4, num_blocks=2))
    drain(f)
    assert f.outcome.tolist() == [FAILED, SERVED]
    assert f.finish_s[0] == 0.0 and f.generated[0] == 0 and f.replica_of[0] == 0
    assert f.replicas()["running"].tolist() == [0] and f.totals()["failed"] == 1


@pytest.mark.parametrize("chunked, fails_at_k, generated", [
    # prompt 4, 10 tokens: 8 tokens fit in 2 blocks of 4; the 9th needs a third at step 6
    (False, 5, 5),
    # chunked, budget 4: 9 tokens prefilled 4 + 4, the last chunk needs a third block at step 3
    (True, 2, 0),
], ids=["decode-outgrows", "chunk-outgrows"])
def test_a_sequence_that_outgrows_the_cache_preempts_itself_and_fails(chunked, fails_at_k,
                                                                      generated):
    prompt = 9 if chunked else 4
    f = ref(explicit([0], [prompt], [10]),
            sched_cfg=sched(block_size=4, num_blocks=2, max_num_batched_tokens=4 if chunked
                            else 64, chunked_prefill=chunked))
    drain(f)
    assert f.outcome[0] == FAILED and f.finish_s[0] == t(fails_at_k)
    assert f.generated[0] == generated and f.preemptions[0] == 1
    assert f.replicas()["blocks_used"].tolist() == [0]


def test_max_num_seqs_caps_the_running_set():
    f = ref(explicit([0, 0, 0], [4, 4, 4], [2, 2, 1]), sched_cfg=sched(max_num_seqs=2),
            queue_first=True)
    drain(f)
    assert log_col(f, "running") == [2, 2, 1] and log_col(f, "waiting") == [1, 1, 0]
    assert f.first_scheduled_s.tolist() == [0.0, 0.0, t(2)]
    assert f.finish_s.tolist() == [t(2), t(2), t(3)]


# --------------------------------------------------------------------------- prefix cache
def test_prefix_cache_hits_leave_one_token_to_compute():
    """Blocks of 4. R1 (12 tokens, keys 1 2 3) computes all and leaves them cached. R2, the
    same 12 tokens: all 3 keys match, but at least one token is computed, so hit = 11 // 4
    = 2 blocks (8 tokens), prefill 4 with context 12. R3, 13 tokens with the same keys: hit 3
    (12 tokens), a one-token prefill (P = 1, D = 0)."""
    f = ref(explicit([0, 1, 2], [12, 12, 13], [1, 1, 1], keys=[[1, 2, 3]] * 3),
            sched_cfg=sched(block_size=4, num_blocks=8, prefix_caching=True))
    drain(f)
    tot = f.totals()
    assert tot["prefix_queries"] == 12 + 12 + 13 and tot["prefix_hits"] == 0 + 8 + 12
    assert log_col(f, "prefill_tokens") == [12, 4, 1]
    assert log_col(f, "kv_tokens") == [12, 12, 13]
    assert log_col(f, "attn_pairs") == [144, 48, 13]
    assert log_col(f, "decode_seqs") == [0, 0, 0]


@pytest.mark.parametrize("p2, hits", [
    (4, 8),      # R2 takes the one uncached block: nothing evicted, R3 hits 2 blocks
    (8, 8),      # evicts key 3's block (freed first, LRU head); keys 1 2 still hit
    (12, 4),     # evicts keys 3 then 2; only key 1 hits
    (16, 0),     # evicts all three
], ids=["no-eviction", "evict-last-block", "evict-two", "evict-all"])
def test_lru_eviction_takes_the_last_block_freed_first(p2, hits):
    """Four blocks of 4. R1 (12 tokens, keys 1 2 3) finishes; its blocks are freed last block
    first, so the LRU holds key 3, 2, 1 (head first). R2 (p2 tokens, no keys) evicts from the
    head; R3 (R1's prompt) then hits what is left (at most 2 blocks, one token computed).
    Freeing first block first would evict key 1 at p2 = 8 and leave R3 no hit."""
    f = ref(explicit([0, 1, 2], [12, p2, 12], [1, 1, 1], keys=[[1, 2, 3], [], [1, 2, 3]]),
            sched_cfg=sched(block_size=4, num_blocks=4, prefix_caching=True))
    drain(f)
    assert f.totals()["prefix_hits"] == hits
    assert (f.outcome == SERVED).all()


@pytest.mark.parametrize("router, replica, hits", [
    ("prefix_aware", 1, 4), ("least_outstanding", 0, 0)])
def test_prefix_aware_routing_picks_the_replica_with_the_cache(router, replica, hits):
    """R0 (keys 1 2) goes to replica 0, R1 (keys 5 6) to replica 1 (0 holds R0). Both end;
    R2 (keys 5 6) at t = 1 finds both idle: prefix-aware takes replica 1, where its prefix is
    cached (8 tokens, one block hit); least-outstanding takes the lowest id."""
    f = ref(explicit([0, 0.001, 1], [8, 8, 8], [1, 1, 1], keys=[[1, 2], [5, 6], [5, 6]]), 2,
            sched_cfg=sched(block_size=4, prefix_caching=True), router=router)
    drain(f)
    assert f.replica_of.tolist() == [0, 1, replica]
    assert f.totals()["prefix_hits"] == hits


@pytest.mark.parametrize("held, replica", [(4, 1), (5, 0)], ids=["within-slack", "over-slack"])
def test_prefix_aware_routing_balances_load_within_four(held, replica):
    """Replica 1 holds ``held`` long requests, the first with keys 1 2; replica 0 is empty
    (READY at t = 5). At t = 6 a request with keys 1 2 goes to replica 1 only while 1 holds at
    most 0 + 4."""
    n = held + 1
    keys = [[1, 2]] + [[]] * (held - 1) + [[1, 2]]
    f = ReferenceFleet(explicit([0.001 * i for i in range(held)] + [6.0], [8] * n, [100] * n,
                                keys=keys),
                       sched(block_size=4, num_blocks=256, prefix_caching=True),
                       step(c0_ms=1000.0), router="prefix_aware")
    assert f.add_replica(5.0) == 0 and f.add_replica(0.0) == 1
    f.advance(6.5)
    assert f.replica_of.tolist() == [1] * held + [replica]


# --------------------------------------------------------------------------- routing
def test_least_outstanding_ties_go_to_the_lowest_id():
    f = ref(explicit([0, 0.001, 0.002, 0.003, 0.004], [4] * 5, [50] * 5), 3)
    f.advance(0.005)
    assert f.replica_of.tolist() == [0, 1, 2, 0, 1]
    reps = f.replicas()                               # the later ones wait for a step end
    assert (reps["running"] + reps["waiting"]).tolist() == [2, 2, 1]


def test_replica_events_come_before_arrivals_at_the_same_time():
    """R0 ends at exactly 1.0 s when R1 arrives; with limit 1, R1 goes straight to the
    replica (had it arrived first it would have queued)."""
    f = ref(explicit([0, 1.0], [4, 4], [1, 1]), step_model=ONE_S, limit=1)
    f.advance(1.0)
    assert f.finish_s[0] == 1.0 and f.first_scheduled_s[1] == 1.0
    assert f.totals()["area_queue"] == 0.0


def test_limit_queues_in_the_router_and_feeds_on_step_end():
    f = ref(explicit([0, 0.001, 0.002], [4] * 3, [2] * 3), limit=1)
    drain(f)
    assert f.first_scheduled_s.tolist() == [0.0, t(2), t(4)]
    assert f.finish_s.tolist() == [t(2), t(4), t(6)]
    assert f.totals()["area_queue"] == pytest.approx((0.02 - 0.001) + (0.04 - 0.002))


def test_raising_the_limit_feeds_the_queue():
    f = ref(explicit([0, 0.001, 0.002], [4] * 3, [2] * 3), limit=1)
    f.advance(0.005)
    assert f.replica_of.tolist() == [0, -1, -1]
    f.set_limit(None)
    assert f.replica_of.tolist() == [0, 0, 0]        # fed now, admitted at the step end
    drain(f)
    assert f.first_scheduled_s.tolist() == [0.0, t(1), t(1)]


def test_a_failure_frees_a_slot_and_feeds_the_queue():
    """Limit 1, budget 8. R1 (prompt 20) and R2 wait behind R0. R0 ends at t2: R1 is fed and
    fails at once (over budget); its slot goes to R2 at t2. (SPEC.md feeds only after a
    step end, READY or a raised limit: R2 would wait forever.)"""
    f = ref(explicit([0, 0.001, 0.002], [4, 20, 4], [2, 1, 2]), limit=1,
            sched_cfg=sched(max_num_batched_tokens=8))
    drain(f)
    assert f.outcome.tolist() == [SERVED, FAILED, SERVED]
    assert f.finish_s.tolist() == [t(2), t(2), t(4)]
    assert f.first_scheduled_s[2] == t(2)


def test_max_queue_sheds_at_arrival():
    f = ref(explicit([0, 0.001, 0.002], [4] * 3, [2] * 3), limit=1, max_queue=1)
    drain(f)
    assert f.outcome.tolist() == [SERVED, SERVED, SHED]
    assert f.finish_s[2] == 0.002 and f.replica_of[2] == -1
    assert f.take_finished().tolist() == [2, 0, 1]
    assert f.totals()["shed"] == 1


def test_queue_timeout_purges_with_finish_at_arrival_plus_timeout():
    """Limit 1, timeout 15 ms. R1 (arrived 1 ms) waits behind R0 and times out at 16 ms,
    purged by the step end at 20 ms; R2 (arrived 20 ms) is fed when R0 ends at 30 ms. The
    router queue held R1 for exactly its timeout and R2 for 10 ms."""
    f = ref(explicit([0, 0.001, 0.02], [4] * 3, [3, 1, 1]), limit=1, queue_timeout_s=0.015)
    drain(f)
    assert f.outcome.tolist() == [SERVED, TIMED_OUT, SERVED]
    assert f.finish_s[1] == 0.001 + 0.015 and f.replica_of[1] == -1
    assert f.first_scheduled_s[2] == t(3)
    assert f.take_finished().tolist() == [1, 0, 2]
    tot = f.totals()
    assert tot["area_queue"] == pytest.approx(0.015 + 0.01)
    assert tot["timed_out"] == 1


def test_the_end_of_advance_purges_and_so_does_setting_the_timeout():
    f = ref(explicit([0, 0.001], [4, 4], [3, 1]), limit=1, queue_timeout_s=0.015)
    f.advance(0.0165)                     # no event between 16 and 16.5 ms touches the queue
    assert f.outcome[1] == TIMED_OUT and f.finish_s[1] == 0.016
    g = ref(explicit([0, 0.001], [4, 4], [3, 1]), limit=1)
    g.advance(0.005)
    g.set_queue_timeout_s(0.002)
    assert g.outcome[1] == TIMED_OUT and g.finish_s[1] == 0.003
    assert g.take_finished().tolist() == [1]


# --------------------------------------------------------------------------- lifecycle
def test_a_starting_replica_becomes_ready_at_its_time_and_is_fed():
    f = ReferenceFleet(explicit([0.1, 0.2], [4, 4], [1, 1]), sched(), TEN_MS,
                       record_steps=True)
    assert f.add_replica(0.5) == 0
    f.advance(0.4)
    assert f.replicas()["state"].tolist() == [STARTING] and f.replica_of.tolist() == [-1, -1]
    f.advance(1.0)
    assert f.replicas()["state"].tolist() == [READY]
    assert f.first_scheduled_s.tolist() == [0.5, 0.5] and log_col(f, "scheduled") == [2]
    tot = f.totals()
    assert tot["area_live"] == pytest.approx(1.0) and tot["area_ready"] == pytest.approx(0.5)
    assert tot["area_queue"] == pytest.approx(0.4 + 0.3)


def test_a_draining_replica_finishes_what_it_holds_then_stops():
    f = ref(explicit([0, 0.006], [4, 4], [3, 1]), 2)
    f.advance(0.005)
    f.remove_replica(0)
    f.advance(0.02)
    assert f.replicas()["state"].tolist() == [DRAINING, READY]
    assert f.replica_of.tolist() == [0, 1]           # R1 went to the replica still READY
    f.advance(0.1)
    assert f.replicas()["state"].tolist() == [STOPPED, READY]
    assert f.outcome.tolist() == [SERVED, SERVED] and f.finish_s[0] == t(3)
    assert f.totals()["area_live"] == pytest.approx(0.03 + 0.1)


def test_removing_a_starting_or_idle_replica_stops_it_at_once():
    f = ref(explicit([0.2], [4], [1]), 0)
    a, b = f.add_replica(0.0), f.add_replica(0.1)
    f.remove_replica(b)                               # STARTING: its READY never comes
    f.advance(0.15)
    f.remove_replica(a)                               # READY, holding nothing
    f.remove_replica(a)                               # STOPPED: nothing
    f.advance(1.0)
    assert f.replicas()["state"].tolist() == [STOPPED, STOPPED]
    assert f.outcome[0] == PENDING and f.totals()["area_queue"] == pytest.approx(0.8)
    assert f.totals()["area_live"] == pytest.approx(0.15)
    with pytest.raises(ValueError, match="replica 5 does not exist"):
        f.remove_replica(5)


# --------------------------------------------------------------------------- results
def test_itl_buckets_are_le():
    """1 s steps make gaps of exactly 1.0 s, a bucket bound: it counts in that bucket."""
    f = ref(explicit([0], [4], [3]), step_model=ONE_S)
    drain(f)
    k = ITL_BOUNDS_S.index(1.0)
    assert f.itl_counts[k] == 2 and f.itl_counts.sum() == 2
    assert f.totals()["itl_sum_s"] == 2.0


def test_rejects_bad_settings():
    reqs = explicit([0], [4], [1])
    for kw, msg in [(dict(router="random"), "router = 'random'"),
                    (dict(limit=-1), "limit = -1"), (dict(max_queue=1.5), "max_queue = 1.5"),
                    (dict(queue_timeout_s=-1.0), "queue_timeout_s = -1.0")]:
        with pytest.raises(ValueError, match=msg):
            ReferenceFleet(reqs, sched(), TEN_MS, **kw)
    f = ReferenceFleet(reqs, sched(), TEN_MS)
    f.advance(1.0)
    with pytest.raises(ValueError, match="before|>= now_s"):
        f.advance(0.5)
    with pytest.raises(ValueError, match="record_steps"):
        f.step_log()
    with pytest.raises(ValueError, match="record_gaps"):
        f.gaps(0)


# --------------------------------------------------------------------------- invariants
CONFIGS = st.fixed_dictionaries(dict(
    n=st.integers(1, 25), seed=st.integers(0, 10_000), rate_rps=st.sampled_from([5.0, 50.0]),
    replicas=st.integers(1, 3), chunked=st.booleans(), caching=st.booleans(),
    block_size=st.sampled_from([4, 16]), num_blocks=st.integers(3, 40),
    max_num_seqs=st.integers(1, 6), budget=st.sampled_from([8, 32, 256]),
    router=st.sampled_from(["least_outstanding", "prefix_aware"]),
    limit=st.none() | st.integers(1, 4), max_queue=st.none() | st.integers(0, 4),
    timeout=st.none() | st.sampled_from([0.01, 0.2]), cv=st.sampled_from([0.0, 0.3]),
    chunks=st.lists(st.floats(0.001, 0.5), min_size=0, max_size=6),
    removals=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 2)), max_size=3),
))


def _build(c: dict, with_lifecycle: bool) -> ReferenceFleet:
    reqs = requests(n=c["n"], rate_rps=c["rate_rps"], prompt=(1, 40), output=(1, 20),
                    seed=c["seed"], prefix_groups=2, shared_blocks=2, block_size=c["block_size"])
    cfg = sched(max_num_seqs=c["max_num_seqs"], max_num_batched_tokens=c["budget"],
                chunked_prefill=c["chunked"], block_size=c["block_size"],
                num_blocks=c["num_blocks"], prefix_caching=c["caching"])
    f = ReferenceFleet(reqs, cfg, step(cv=c["cv"]), seed=c["seed"], router=c["router"],
                       limit=c["limit"], max_queue=c["max_queue"],
                       queue_timeout_s=c["timeout"], record_steps=True, record_gaps=True)
    for _ in range(c["replicas"]):
        f.add_replica(0.0)
    if with_lifecycle:
        # Remove some replicas at given times, adding one back (READY after a 0.1 s start) so
        # that a READY replica is always on its way.
        for at_s, r in sorted(c["removals"]):
            f.advance(max(f.now_s, at_s))
            f.add_replica(f.now_s + 0.1)
            f.remove_replica(min(r, len(f.replicas()["state"]) - 2))
    return f


def _check_invariants(f: ReferenceFleet, c: dict) -> None:
    n, req = c["n"], f.req
    log, reps, tot = f.step_log(), f.replicas(), f.totals()
    assert np.all(log["blocks_used"] <= c["num_blocks"])
    assert np.all(log["running"] <= c["max_num_seqs"])
    assert np.all(log["prefill_tokens"] + log["decode_seqs"] <= c["budget"])
    assert np.all(log["scheduled"] >= 1) and np.all(log["end_s"] >= log["start_s"])
    for r in range(len(reps["state"])):        # a replica runs one step at a time
        mine = log["replica"] == r
        assert np.all(log["start_s"][mine][1:] >= log["end_s"][mine][:-1])
    assert np.all(reps["blocks_used"] <= c["num_blocks"])
    assert not (f._queue and f._eligible())      # nothing waits in the router for no reason
    # Conservation.
    counts = np.bincount(f.outcome, minlength=5)
    assert counts.sum() == n
    assert [tot[k] for k in ("served", "shed", "timed_out", "failed")] == counts[1:].tolist()
    assert tot["arrived"] == f.arrivals_done == int(np.sum(req.arrival_s <= f.now_s))
    # Per request.
    served = f.outcome == SERVED
    assert np.array_equal(f.generated[served], req.output_tokens[served])
    assert np.all(f.generated <= req.output_tokens)
    done = f.outcome != PENDING
    assert np.all(f.finish_s[done] >= req.arrival_s[done])
    assert np.all(f.first_scheduled_s[served] <= f.first_token_s[served])
    assert np.all(f.first_token_s[served] <= f.finish_s[served])
    assert np.all(np.isnan(f.finish_s[~done]))
    for i in np.flatnonzero(served):
        g = f.gaps(int(i))
        assert len(g) == req.output_tokens[i] - 1
        assert g.sum() == pytest.approx(f.finish_s[i] - f.first_token_s[i], abs=1e-9)
    # Counters against the per-request arrays.
    made = f.generated.astype(np.int64)
    assert tot["output_tokens"] == made.sum()
    assert tot["prompt_tokens"] == req.prompt_tokens[made >= 1].sum()
    assert tot["itl_count"] == np.maximum(made - 1, 0).sum() == f.itl_counts.sum()
    assert tot["preemptions"] == f.preemptions.sum() == reps["preemptions"].sum()
    assert tot["steps"] == len(log["start_s"]) == reps["steps"].sum()
    assert tot["prefix_hits"] <= tot["prefix_queries"]
    # Little's law on the system integral (a request is in the system until its finish).
    arrived = req.arrival_s <= f.now_s
    until = np.where(np.isnan(f.finish_s), f.now_s, np.minimum(f.finish_s, f.now_s))
    assert tot["area_system"] == pytest.approx(float(np.sum((until - req.arrival_s)[arrived])),
                                               rel=1e-9, abs=1e-9)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONFIGS)
def test_invariants_of_random_small_runs(c):
    f = _build(c, with_lifecycle=True)
    while (f.outcome == PENDING).any() and f.now_s < 50.0:
        f.advance(f.now_s + 0.37)
        _check_invariants(f, c)
    assert not (f.outcome == PENDING).any()
    finished = np.concatenate([f.take_finished(), f.take_finished()])
    assert sorted(finished.tolist()) == list(range(c["n"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONFIGS)
def test_advancing_in_chunks_changes_nothing(c):
    """The same run advanced once, or in pieces: the same per-request results and counters
    (timeouts are purged lazily, but their finish and the integrals do not depend on when)."""
    one, many = _build(c, False), _build(c, False)
    for dt in c["chunks"]:
        many.advance(many.now_s + dt)
    one.advance(60.0)
    many.advance(60.0)
    for name in ("outcome", "replica_of", "first_scheduled_s", "first_token_s", "finish_s",
                 "preemptions", "generated", "itl_counts"):
        assert np.array_equal(getattr(one, name), getattr(many, name), equal_nan=True), name
    t1, t2 = one.totals(), many.totals()
    for k in t1:
        assert t1[k] == pytest.approx(t2[k], rel=1e-9, abs=1e-12), k
    assert np.array_equal(np.sort(one.take_finished()), np.sort(many.take_finished()))
