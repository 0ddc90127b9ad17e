"""The snapshot of an LLM window: vLLM's series as means, rates and SLO-bucketed histograms."""
from __future__ import annotations

import math

import numpy as np
import pytest

from trimtab.collectors.names import latency_buckets_s
from trimtab.controllers.core.guards import hold_on_unreadable, value_missing
from trimtab.controllers.core.types import ALL_FIELD_GROUPS, FieldGroup, Snapshot
from trimtab.sim.llm.types import ITL_BOUNDS_S, LlmWindow
from trimtab.sim.snapshot import build_snapshot, latency_histogram, rebucket
from tests.sim.builders import window

WINDOW_S = 10.0
SLO_BOUNDS_S = latency_buckets_s((2.0, 0.2))      # e2e/TTFT 2 s, TPOT 0.2 s


def fine_counts(gaps_s) -> np.ndarray:
    """The engine's ITL histogram of ``gaps_s`` (SPEC: ``le`` buckets on ITL_BOUNDS_S)."""
    idx = np.searchsorted(np.asarray(ITL_BOUNDS_S), np.asarray(gaps_s, float), side="left")
    return np.bincount(idx, minlength=len(ITL_BOUNDS_S) + 1).astype(np.int64)


def llm_window(**kw) -> LlmWindow:
    base = dict(ttft_s=np.asarray([0.3, 2.0, 2.5]), tpot_s=np.asarray([0.05, 0.2]),
                queue_wait_s=np.asarray([0.1, 0.1, 1.0]),
                itl_counts=fine_counts([0.01, 0.05, 0.2, 1.0]), itl_sum_s=1.26,
                prompt_tokens=1000, output_tokens=250, preemptions=3, prefix_queries=160,
                prefix_hits=48, steps=40, running_area=30.0, waiting_area=5.0,
                blocks_area=400.0, running_now=3, waiting_now=1, blocks_used_now=40,
                num_blocks=100)
    base.update(kw)
    return LlmWindow(**base)


def snapshot(llm: LlmWindow | None, *, ready: int = 2, **kw) -> Snapshot:
    w = window(0.0, WINDOW_S, arrivals=3, ready=ready)
    w.llm = llm
    return build_snapshot(w, bounds_s=SLO_BOUNDS_S, concurrency_limit=None, max_batch_size=1,
                          batch_timeout_ms=0.0, memory=None, **kw)


# --- means and rates --------------------------------------------------------------------------
@pytest.mark.parametrize("field, kw, ready, expected", [
    ("engine_running", {}, 2, 3.0),                         # 30 sequence-seconds over 10 s
    ("engine_waiting", {}, 2, 0.5),
    ("kv_cache_usage_ratio", {}, 2, 0.2),                   # 400 / (100 blocks * 2 * 10 s)
    ("kv_cache_usage_ratio", {}, 1, 0.4),
    ("kv_cache_usage_ratio", {"blocks_area": 5000.0}, 2, 1.0),   # draining ones: capped
    ("kv_cache_usage_ratio", {}, 0, None),                  # no ready replica: no capacity
    ("prompt_tokens_rps", {}, 2, 100.0),
    ("generation_tokens_rps", {}, 2, 25.0),
    ("preemptions_rps", {}, 2, 0.3),
    ("prefix_cache_hit_ratio", {}, 2, 0.3),                 # 48 / 160
    ("prefix_cache_hit_ratio", {"prefix_queries": 0, "prefix_hits": 0}, 2, None),
], ids=["running", "waiting", "kv", "kv-one-ready", "kv-capped", "kv-none-ready", "prompt",
        "generation", "preemptions", "prefix", "prefix-no-query"])
def test_gauges_are_window_means_and_counters_rates(field, kw, ready, expected):
    value = getattr(snapshot(llm_window(**kw), ready=ready), field)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected)


def test_an_llm_window_names_no_group_missing_and_keeps_the_request_level_fields():
    llm_snap, plain = snapshot(llm_window()), snapshot(None)
    assert llm_snap.missing == plain.missing == frozenset()
    for name in ("arrival_rate_rps", "queue_depth", "in_flight", "latency", "ready_replicas"):
        assert getattr(llm_snap, name) == getattr(plain, name), name


def test_a_request_level_window_leaves_every_llm_field_none_and_not_missing():
    snap = snapshot(None)
    assert all(getattr(snap, a) is None for a in FieldGroup.LLM.attributes)
    assert FieldGroup.LLM not in snap.missing
    # A window without the attribute at all (a fleet older than WindowStats.llm) reads the same.
    w = window(0.0, WINDOW_S, arrivals=3)
    w.__dict__.pop("llm", None)
    snap2 = build_snapshot(w, bounds_s=SLO_BOUNDS_S, concurrency_limit=None, max_batch_size=1,
                           batch_timeout_ms=0.0, memory=None)
    assert snap2.ttft is None and snap2.missing == frozenset()


# --- histograms -------------------------------------------------------------------------------
def test_ttft_and_tpot_are_histograms_of_the_samples_with_a_bound_at_each_slo():
    snap = snapshot(llm_window())
    assert snap.ttft.bounds_s == SLO_BOUNDS_S and snap.ttft.total == 3
    assert snap.ttft.count_over(2.0) == 1                   # 2.0 itself is within (le)
    assert snap.ttft == latency_histogram(np.asarray([0.3, 2.0, 2.5]), SLO_BOUNDS_S)
    assert snap.tpot.total == 2 and snap.tpot.count_over(0.2) == 0
    assert snap.itl.bounds_s == SLO_BOUNDS_S and snap.itl.total == 4


def test_explicit_ttft_and_itl_bounds_win_over_the_latency_bounds():
    ttft_b, itl_b = latency_buckets_s((1.5,)), latency_buckets_s((0.1,))
    snap = snapshot(llm_window(), ttft_bounds_s=ttft_b, itl_bounds_s=itl_b)
    assert snap.ttft.bounds_s == ttft_b and snap.ttft.count_over(1.5) == 2
    assert snap.tpot.bounds_s == itl_b and snap.itl.bounds_s == itl_b
    assert snap.latency.bounds_s == SLO_BOUNDS_S


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bounds", [ITL_BOUNDS_S[::5], ITL_BOUNDS_S[40:81:10],
                                    (ITL_BOUNDS_S[50],)], ids=["every-5th", "decades", "one"])
def test_itl_rebucketing_is_exact_on_bounds_of_the_fine_grid(seed, bounds):
    """Coarse bounds taken from ITL_BOUNDS_S: the re-bucketed histogram is the histogram of
    the gaps themselves, and keeps every count."""
    rng = np.random.default_rng(seed)
    gaps = np.concatenate([rng.lognormal(math.log(0.05), 1.5, 2000),
                           rng.choice(np.asarray(bounds), 50)])       # some exactly on a bound
    got = rebucket(fine_counts(gaps), ITL_BOUNDS_S, bounds)
    assert got == latency_histogram(gaps, bounds)
    assert got.total == len(gaps)


@pytest.mark.parametrize("bound_s", [0.01, 0.1, 1.0])
def test_a_gap_equal_to_a_bound_lands_in_that_bound_s_bucket(bound_s):
    bounds = latency_buckets_s((0.2,))
    assert bound_s in bounds and bound_s in ITL_BOUNDS_S      # 10 ** (k / 20) is exact here
    h = rebucket(fine_counts([bound_s]), ITL_BOUNDS_S, bounds)
    assert h.counts[bounds.index(bound_s)] == 1 and h.count_over(bound_s) == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_an_off_grid_bound_never_hides_a_slow_gap(seed):
    """0.2 s is no bound of ITL_BOUNDS_S: the fine bucket holding it counts as above it, so
    count_over(0.2) is at least the true count and at most that plus the gaps of that one
    fine bucket below 0.2."""
    rng = np.random.default_rng(seed)
    gaps = np.concatenate([rng.lognormal(math.log(0.15), 0.5, 3000), [0.2, 0.2]])
    bounds = latency_buckets_s((0.2,))
    h = rebucket(fine_counts(gaps), ITL_BOUNDS_S, bounds)
    assert h.total == len(gaps)
    k = int(np.searchsorted(ITL_BOUNDS_S, 0.2))
    lower, upper = ITL_BOUNDS_S[k - 1], ITL_BOUNDS_S[k]
    assert lower < 0.2 < upper
    true_over = int(np.count_nonzero(gaps > 0.2))
    straddle = int(np.count_nonzero((gaps > lower) & (gaps <= 0.2)))
    assert straddle >= 2 and h.count_over(0.2) == true_over + straddle


def test_rebucket_refuses_counts_that_do_not_fit_the_fine_bounds():
    with pytest.raises(ValueError, match="rebucket: 3 counts for 121 fine bounds"):
        rebucket(np.zeros(3, dtype=np.int64), ITL_BOUNDS_S, (0.1,))


# --- field groups: missing and stale handling covers the LLM fields ----------------------------
def test_the_llm_group_covers_every_llm_field_and_is_among_all_groups():
    assert FieldGroup("llm") is FieldGroup.LLM and FieldGroup.LLM in ALL_FIELD_GROUPS
    for name in ("engine_running", "engine_waiting", "kv_cache_usage_ratio", "ttft", "tpot",
                 "itl", "prompt_tokens_rps", "generation_tokens_rps", "preemptions_rps",
                 "prefix_cache_hit_ratio"):
        assert FieldGroup.of(name) is FieldGroup.LLM


@pytest.mark.parametrize("need, llm, kw, holds", [
    (FieldGroup.LLM, True, {}, False),
    (FieldGroup.LLM, False, {}, True),                          # a request-level target
    (FieldGroup.LLM, True, {"missing": frozenset({"llm"})}, True),
    ("kv_cache_usage_ratio", True, {"stale": frozenset({"llm"})}, True),
    ("prefix_cache_hit_ratio", True, {}, True),                 # no query: no ratio
    ("kv_cache_usage_ratio", True, {}, False),
], ids=["llm-there", "request-level", "named-missing", "named-stale", "value-none", "value"])
def test_a_policy_needing_llm_fields_holds_when_they_are_unreadable(need, llm, kw, holds):
    snap = snapshot(llm_window(prefix_queries=0, prefix_hits=0) if llm else None)
    snap = snap.with_(**kw) if kw else snap
    assert (hold_on_unreadable(snap, [need]) is not None) == holds
    assert value_missing(snap, need) == holds


@pytest.mark.parametrize("spec", ["hpa", "keda", "kpa", "ray", "static:replicas=3"])
def test_the_existing_policies_ignore_the_llm_fields(spec):
    from trimtab.controllers.core.registry import load_builtin_policies, make_policy
    from trimtab.controllers.core.types import FleetBounds

    load_builtin_policies()
    policy = make_policy(spec, FleetBounds(max_replicas=20), 15.0)
    plain, llm = snapshot(None), snapshot(llm_window())
    d_plain, _ = policy.decide(plain, policy.initial_state(), plain.time_s)
    d_llm, _ = policy.decide(llm, policy.initial_state(), llm.time_s)
    assert d_plain == d_llm


# --- end to end: what a policy sees in an LLM replay -------------------------------------------
def test_the_snapshots_of_an_llm_replay_carry_the_engine_s_fields():
    """A short llm-peer under a policy that records what it saw: every snapshot has the LLM
    fields, and over the ticks they add up to the replay's totals (the exact source's windows
    tile the run)."""
    from dataclasses import dataclass, field

    import yaml

    from trimtab.controllers.core.types import Decision
    from trimtab.sim.replay import simulate
    from trimtab.sim.scenario import scenario_from_dict
    from tests.conftest import REPO_ROOT

    @dataclass
    class Recorder:
        name: str = "recorder"
        interval_s: float = 15.0
        params: dict = field(default_factory=dict)
        seen: list = field(default_factory=list)

        def initial_state(self) -> int:
            return 0

        def decide(self, snap: Snapshot, state: int, now_s: float):
            self.seen.append(snap)
            return Decision(replicas=1, reason="steady"), state

    doc = yaml.safe_load((REPO_ROOT / "sim/data/scenarios/llm-peer.yaml").read_text())
    doc["trace"].update(duration_s=200, rate_rps=1.5)
    doc["trace"]["lengths"]["path"] = str(REPO_ROOT / "sim/data/traces/azure_llm_conv.csv")
    rec = Recorder()
    s = simulate(scenario_from_dict(doc), rec).summary
    assert s["served"] == s["requests"] > 200
    snaps = rec.seen
    assert all(FieldGroup.LLM not in x.missing and x.engine_running is not None for x in snaps)
    assert sum(x.ttft.total for x in snaps) == s["served"]
    assert sum(x.itl.total for x in snaps) == s["output_tokens"] - s["served"]
    assert sum(x.generation_tokens_rps * x.window_s for x in snaps) == pytest.approx(
        s["output_tokens"])
    assert sum(x.prompt_tokens_rps * x.window_s for x in snaps) == pytest.approx(
        s["prompt_tokens"])
    assert sum(x.preemptions_rps * x.window_s for x in snaps) == pytest.approx(s["preemptions"])
    kv = [x.kv_cache_usage_ratio for x in snaps]
    assert all(0.0 <= v <= 1.0 for v in kv) and max(kv) > 0.5
    assert all(x.ttft.bounds_s == x.latency.bounds_s and 2.0 in x.ttft.bounds_s
               and 0.2 in x.itl.bounds_s for x in snaps)
