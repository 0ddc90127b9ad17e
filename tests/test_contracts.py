"""The shared contracts: histogram arithmetic, policy specs, the registry, the clocks."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from trimtab.collectors.names import ALL_METRICS, BY_NAME, exposed_series_names, latency_buckets_s
from trimtab.controllers.shell.clock import ManualClock
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.spec import SpecError, parse_spec
from trimtab.controllers.core.types import FleetBounds, LatencyHistogram, Snapshot


def hist(counts: list[int], bounds: tuple[float, ...] = (0.1, 0.5, 1.0)) -> LatencyHistogram:
    return LatencyHistogram(bounds_s=bounds, counts=tuple(counts))


@pytest.mark.parametrize("counts,q,expected", [
    pytest.param([10, 0, 0, 0], 0.5, 0.05, id="median-inside-first-bucket"),
    pytest.param([0, 10, 0, 0], 0.5, 0.3, id="interpolates-within-bucket"),
    pytest.param([5, 5, 0, 0], 0.99, 0.492, id="p99-near-top-of-second"),
    pytest.param([0, 0, 0, 4], 0.5, 1.0, id="inf-bucket-returns-last-bound"),
])
def test_quantile_interpolates_like_promql(counts, q, expected):
    assert hist(counts).quantile(q) == pytest.approx(expected)


def test_quantile_of_empty_histogram_is_nan():
    assert math.isnan(hist([0, 0, 0, 0]).quantile(0.99))


def test_count_over_is_exact_at_a_bucket_bound():
    # 3 requests at or under 0.5 s, 4 above: an SLO at 0.5 s counts exactly 4 misses.
    assert hist([1, 2, 3, 1]).count_over(0.5) == 4


@given(st.lists(st.integers(0, 1000), min_size=4, max_size=4), st.floats(0.01, 0.99),
       st.floats(0.01, 0.99))
def test_quantile_is_monotone_in_q(counts, q1, q2):
    h = hist(counts)
    if h.total == 0:
        return
    lo, hi = sorted((q1, q2))
    assert h.quantile(lo) <= h.quantile(hi) + 1e-12


@pytest.mark.parametrize("counts,bounds", [
    pytest.param((1, 2), (0.1, 0.5), id="too-few-counts"),
    pytest.param((1, 2, 3), (0.5, 0.1), id="bounds-decrease"),
])
def test_histogram_rejects_bad_shapes(counts, bounds):
    with pytest.raises(ValueError, match="LatencyHistogram"):
        LatencyHistogram(bounds_s=bounds, counts=counts)


@pytest.mark.parametrize("text,name,params", [
    ("static:replicas=8", "static", {"replicas": 8}),
    ("hpa:target=5.5,metric=in_flight", "hpa", {"target": 5.5, "metric": "in_flight"}),
    ("trimtab", "trimtab", {}),
    ("KPA:panic=true", "kpa", {"panic": True}),
])
def test_parse_spec(text, name, params):
    spec = parse_spec(text)
    assert (spec.name, spec.params) == (name, params)


@pytest.mark.parametrize("text,needle", [
    ("static:replicas", "key=value"),
    (":x=1", "name"),
])
def test_parse_spec_errors_name_the_part(text, needle):
    with pytest.raises(SpecError, match=needle):
        parse_spec(text)


def test_unknown_policy_lists_known_ones():
    with pytest.raises(SpecError, match="known: .*static"):
        make_policy("nosuch", FleetBounds())


def test_static_policy_clamps_to_bounds():
    policy = make_policy("static:replicas=500", FleetBounds(max_replicas=20))
    decision, _ = policy.decide(Snapshot(time_s=0, window_s=15), policy.initial_state(), 0.0)
    assert decision.replicas == 20


def test_static_rejects_unknown_parameter():
    with pytest.raises(SpecError, match="unknown parameter"):
        make_policy("static:replicas=2,foo=1", FleetBounds())


def test_latency_buckets_include_every_slo_threshold():
    buckets = latency_buckets_s((0.3, 0.5, 2.0))
    assert {0.3, 0.5, 2.0} <= set(buckets)
    assert list(buckets) == sorted(set(buckets))


def test_metric_table_is_consistent():
    assert len(BY_NAME) == len(ALL_METRICS), "duplicate metric names"
    for m in ALL_METRICS:
        assert m.name.startswith("trimtab_")
        assert not m.name.endswith("_total"), f"{m.name}: client_python appends _total"
        assert ":" not in m.name
    assert "trimtab_requests_total" in exposed_series_names()


def test_manual_clock_only_moves_forward():
    clock = ManualClock(10.0)
    clock.sleep_until(5.0)
    assert clock.now_s() == 10.0
    clock.advance(2.5)
    assert clock.now_s() == 12.5
    with pytest.raises(ValueError):
        clock.advance(-1)


# --- field groups: what Snapshot.missing / Snapshot.stale name --------------------------------
@pytest.mark.parametrize("group, attributes", [
    ("arrival_rate_rps", ("arrival_rate_rps",)),
    ("queue_depth", ("queue_depth",)),
    ("in_flight", ("in_flight",)),
    ("latency", ("latency",)),
    ("batch", ("batch_samples", "mean_batch_size")),
    ("replicas", ("ready_replicas", "starting_replicas", "desired_replicas")),
    ("gpu", ("gpu_memory_used_ratio", "gpu_busy_ratio")),
    ("llm", ("engine_running", "engine_waiting", "kv_cache_usage_ratio", "ttft", "tpot", "itl",
             "prompt_tokens_rps", "generation_tokens_rps", "preemptions_rps",
             "prefix_cache_hit_ratio")),
])
def test_each_field_group_names_snapshot_attributes(group, attributes):
    from dataclasses import fields

    from trimtab.controllers.core.types import FieldGroup

    member = FieldGroup(group)
    assert member.attributes == attributes
    assert set(attributes) <= {f.name for f in fields(Snapshot)}
    assert all(FieldGroup.of(a) is member for a in attributes)


def test_a_plain_name_becomes_a_member_and_the_old_constants_are_members():
    from trimtab.controllers.core import types as t

    s = Snapshot(time_s=0.0, window_s=15.0, missing=frozenset({"gpu"}),
                 stale=frozenset({"arrival_rate_rps"}))
    assert s.missing == {t.FieldGroup.GPU} and all(type(g) is t.FieldGroup for g in s.missing)
    assert t.FIELD_ARRIVAL_RATE in s.stale and "arrival_rate_rps" in s.stale
    assert s.with_(missing=s.missing | {"replicas"}).missing == {t.FIELD_GPU, t.FIELD_REPLICAS}
    assert {t.FIELD_ARRIVAL_RATE, t.FIELD_QUEUE_DEPTH, t.FIELD_IN_FLIGHT, t.FIELD_LATENCY,
            t.FIELD_BATCH, t.FIELD_REPLICAS, t.FIELD_GPU, t.FIELD_LLM} == t.ALL_FIELD_GROUPS


@pytest.mark.parametrize("kw, needle", [
    (dict(missing=frozenset({"arrival_rate"})), "Snapshot.missing: field group 'arrival_rate'"),
    (dict(stale=frozenset({"gpus"})), "Snapshot.stale: field group 'gpus' is unknown"),
    (dict(missing=frozenset({"gpu_busy_ratio"})), "'gpu_busy_ratio' is unknown"),  # an attribute
], ids=["typo", "plural", "attribute-not-group"])
def test_a_wrong_field_group_is_refused_where_the_snapshot_is_built(kw, needle):
    with pytest.raises(ValueError) as err:
        Snapshot(time_s=0.0, window_s=15.0, **kw)
    assert needle in str(err.value) and "known: " in str(err.value)


def test_a_guard_refuses_a_need_that_names_no_attribute():
    from trimtab.controllers.core.guards import hold_on_unreadable

    snap = Snapshot(time_s=0.0, window_s=15.0, arrival_rate_rps=1.0, ready_replicas=1)
    with pytest.raises(ValueError, match="'gpu_busy' is no Snapshot attribute"):
        hold_on_unreadable(snap, ["gpu_busy"])


@pytest.mark.parametrize("need, kw, holds", [
    ("gpu_busy_ratio", dict(gpu_busy_ratio=None, gpu_memory_used_ratio=0.5), True),
    ("gpu_busy_ratio", dict(gpu_busy_ratio=0.5), False),
    ("gpu_busy_ratio", dict(gpu_busy_ratio=0.5, missing=frozenset({"gpu"})), True),
    ("GPU", dict(gpu_busy_ratio=None, gpu_memory_used_ratio=0.5), False),   # one value there
    ("GPU", dict(), True),                                                   # none there
    ("IN_FLIGHT", dict(in_flight=3.0, stale=frozenset({"in_flight"})), True),
], ids=["attribute-none", "attribute-there", "group-missing", "group-partly", "group-none",
        "group-stale"])
def test_a_need_is_a_group_or_one_attribute(need, kw, holds):
    """An attribute needs its own value; a group needs any of its values (and neither may be
    named missing or stale)."""
    from trimtab.controllers.core.guards import hold_on_unreadable
    from trimtab.controllers.core.types import FieldGroup

    required = FieldGroup[need] if need.isupper() else need
    snap = Snapshot(time_s=0.0, window_s=15.0, arrival_rate_rps=1.0, ready_replicas=1, **kw)
    assert (hold_on_unreadable(snap, [required]) is not None) == holds
