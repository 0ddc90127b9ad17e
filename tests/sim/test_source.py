"""The simulated source: each SimSourceConfig setting does what it says, and the replay runs the
production loop's safety stages and warm-up with it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from trimtab.controllers.core.types import (REASON_HOLD_MISSING, REASON_HOLD_STALE,
                                            REASON_HOLD_WARMUP, Decision)
from trimtab.sim.snapshot import build_snapshot, merge_windows
from trimtab.sim.source import EXPECTED, IDEAL, PROMETHEUS, SimSourceConfig, view_snapshot
from tests.sim.builders import BOUNDS_S, piece, step_pieces, window
from tests.sim.test_replay import Scripted, scenario


def view(cfg: SimSourceConfig, pieces, now_s: float, window_s: float = 15.0, **kw):
    args = dict(latency_bounds_s=BOUNDS_S, concurrency_limit=None, max_batch_size=8,
                batch_timeout_ms=5.0)
    args.update(kw)
    return view_snapshot(cfg, pieces, now_s, window_s, **args)


# Each case: a setting, when it is read (s), the loop's rate window (s), and the arrival rate
# seen on a step from 0 to 10 rps at 60 s, scraped every 15 s. The exact view reads 10 at 75 s.
STEP_CASES = [
    pytest.param(IDEAL, [75.0, 90.0], 15.0, [10.0, 10.0], id="ideal-is-the-last-interval"),
    pytest.param(IDEAL, [75.0, 90.0, 105.0, 120.0], 60.0, [2.5, 5.0, 7.5, 10.0],
                 id="rate-window-smooths-the-step-over-60s"),
    pytest.param(SimSourceConfig(scrape_delay_s=15.0), [75.0, 90.0], 15.0, [0.0, 10.0],
                 id="scrape-delay-shifts-it-one-scrape"),
    pytest.param(SimSourceConfig(scrape_delay_s=10.0), [75.0, 90.0], 15.0, [0.0, 10.0],
                 id="a-delay-shorter-than-a-scrape-still-misses-the-newest"),
    pytest.param(SimSourceConfig(scrape_delay_s=15.0), [90.0, 105.0], 30.0, [5.0, 10.0],
                 id="delay-and-window-together"),
]


@pytest.mark.parametrize("cfg, at_s, window_s, rates", STEP_CASES)
def test_each_setting_on_a_step(cfg, at_s, window_s, rates):
    pieces = step_pieces()
    seen = [view(cfg, [p for p in pieces if p.w.t1_s <= t], t, window_s) for t in at_s]
    assert [s.arrival_rate_rps for s in seen] == pytest.approx(rates)
    assert all(s.time_s == t for s, t in zip(seen, at_s))
    assert all(not s.missing and not s.stale for s in seen)


def test_the_ideal_view_is_the_snapshot_of_the_tick_window():
    # Counterfactual: any setting but the default would change one of these fields.
    w = window(15.0, 30.0, arrivals=120, completions=100, shed=3, queue=2.5, held=4.0,
               ready=3, starting=1, batches=((4, 0.2), (2, 0.12)))
    p = piece(15.0, 30.0, arrivals=120, completions=100, shed=3, queue=2.5, held=4.0,
              ready=3, starting=1, batches=((4, 0.2), (2, 0.12)))
    exact = build_snapshot(w, bounds_s=BOUNDS_S, concurrency_limit=4, max_batch_size=8,
                           batch_timeout_ms=5.0, memory=None)
    assert view(IDEAL, [piece(0.0, 15.0), p], 30.0, concurrency_limit=4) == exact


def test_counted_at_completion_undercounts_requests_in_progress():
    # 150 arrived in the window, 100 finished, 10 were shed: rate(requests_total) counts 110.
    p = piece(0.0, 15.0, arrivals=150, completions=100, shed=10)
    exact = view(IDEAL, [p], 15.0)
    live = view(SimSourceConfig(counted_at_completion=True), [p], 15.0)
    assert exact.arrival_rate_rps == pytest.approx(10.0)
    assert live.arrival_rate_rps == pytest.approx(110 / 15)


@pytest.mark.parametrize("cfg, now_s, stale", [
    (SimSourceConfig(scrape_delay_s=15.0, staleness_s=20.0), 90.0, False),  # 15 s old
    (SimSourceConfig(scrape_delay_s=15.0, staleness_s=10.0), 90.0, True),   # 15 s > 10 s
    (SimSourceConfig(staleness_s=10.0), 100.0, False),  # the newest scrape, at 90, is 10 s old
    (SimSourceConfig(staleness_s=10.0), 104.0, True),   # ... 14 s old
], ids=["within-the-bound", "older-than-the-bound", "at-the-bound", "past-the-bound"])
def test_staleness_marks_every_field_stale(cfg, now_s, stale):
    pieces = [p for p in step_pieces() if p.w.t1_s <= 90.0]
    snap = view(cfg, pieces, now_s)
    assert snap.stale == (frozenset(EXPECTED) if stale else frozenset())
    assert snap.arrival_rate_rps is not None          # the value is there, but old


def test_before_the_first_scrape_is_seen_every_field_is_missing():
    snap = view(SimSourceConfig(scrape_delay_s=30.0), step_pieces()[:1], 15.0)
    assert snap.missing == frozenset(EXPECTED) and snap.arrival_rate_rps is None


def test_a_read_sees_the_newest_scrape_not_the_newest_piece():
    # Ticks every 10 s cut the fleet at 10, 20; scrapes at 15 only: a read at 20 sees (0, 15].
    pieces = [piece(0.0, 10.0, False, arrivals=100), piece(10.0, 15.0, True, arrivals=50),
              piece(15.0, 20.0, False, arrivals=500)]
    snap = view(SimSourceConfig(scrape_interval_s=15.0), pieces, 20.0, window_s=15.0)
    assert snap.arrival_rate_rps == pytest.approx(150 / 15)
    assert snap.window_s == 15.0


@pytest.mark.parametrize("field, value, rule", [
    ("rate_window_s", 0.0, "must be > 0"), ("scrape_interval_s", -1.0, "must be > 0"),
    ("staleness_s", 0.0, "must be > 0"), ("scrape_delay_s", -1.0, "must be >= 0"),
    ("gate_per_replica", 0, "must be >= 1"),
])
def test_bad_settings_name_the_field_and_the_rule(field, value, rule):
    with pytest.raises(ValueError, match=f"{field} = {value}, {rule}"):
        SimSourceConfig(**{field: value})


def test_merged_windows_add_counts_and_keep_the_end_state():
    a = window(0.0, 5.0, arrivals=40, queue=2.0, ready=2)
    b = window(5.0, 10.0, arrivals=60, queue=4.0, ready=3)
    m = merge_windows([a, b])
    assert (m.t0_s, m.t1_s, m.arrivals, m.ready) == (0.0, 10.0, 100, 3)
    assert m.queue_area / 10.0 == pytest.approx(3.0)
    assert len(m.latencies_s) == 100


# ------------------------------------------------------------------ in a replay, end to end
def test_a_scale_down_during_warmup_is_held_by_the_production_safety_stage():
    # Counterfactual: without the loop's warm-up the fleet would shrink to 1 at 10 s.
    pol = Scripted([Decision(replicas=1, reason="scale_down")])
    res = simulate_warm(pol, warmup_s=60.0)
    reasons = res.summary["decisions_by_reason"]
    assert reasons[REASON_HOLD_WARMUP] == 5               # ticks at 10 .. 50 s
    t = dict(zip(res.ticks["time_s"], res.ticks["desired_replicas"]))
    assert t[50.0] == 2 and t[60.0] == 1
    assert list(res.ticks["reason"][:5]) == [REASON_HOLD_WARMUP] * 5
    assert res.summary["scale_events"] == 1


def simulate_warm(pol, warmup_s: float, **kw):
    from trimtab.sim.replay import simulate

    return simulate(scenario(controller={"interval_s": 10, "warmup_s": warmup_s}), pol, **kw)


def test_stale_and_missing_data_hold_in_a_replay():
    # Read 30 s late, stale after 20 s: the ticks at 10, 20 and 30 s see no scrape yet
    # (missing), the rest only stale ones; the policy's scale-up is never applied.
    pol = Scripted([Decision(replicas=6, reason="scale_up")])
    res = simulate_warm(pol, 0.0, source=SimSourceConfig(scrape_delay_s=30.0,
                                                         staleness_s=20.0))
    reasons = res.summary["decisions_by_reason"]
    assert reasons[REASON_HOLD_MISSING] == 3
    assert reasons[REASON_HOLD_STALE] == len(res.ticks["time_s"]) - 3
    assert res.summary["scale_events"] == 0 and set(res.ticks["desired_replicas"]) == {2}
    assert math.isnan(res.ticks["arrival_rate_rps"][0])


def test_the_policy_sees_the_source_setting():
    pol = Scripted([Decision(replicas=2, reason="steady")])
    simulate_warm(pol, 0.0, source=SimSourceConfig(rate_window_s=40.0))
    snaps = [s for s, _ in pol.seen]
    assert [s.window_s for s in snaps[:5]] == [10.0, 20.0, 30.0, 40.0, 40.0]


def test_a_prometheus_like_replay_is_deterministic_and_scrapes_on_its_own_grid():
    cfg = SimSourceConfig(rate_window_s=60.0, scrape_interval_s=15.0, scrape_delay_s=15.0,
                          staleness_s=60.0, counted_at_completion=True)
    assert cfg == PROMETHEUS
    a = simulate_warm("hpa", 0.0, source=PROMETHEUS, record_requests=True)
    b = simulate_warm("hpa", 0.0, source=PROMETHEUS, record_requests=True)
    assert a.summary == b.summary
    assert np.array_equal(a.requests["finish_s"], b.requests["finish_s"])
    # The controller ticks every 15 s (HPA's period), reading what was scraped 15 s before.
    assert a.ticks["time_s"][0] == 15.0 and math.isnan(a.ticks["arrival_rate_rps"][0])
    assert a.summary["decisions_by_reason"].get(REASON_HOLD_MISSING) == 1
