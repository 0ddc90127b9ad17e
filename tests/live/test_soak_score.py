"""The fault soak's scoring (trimtab.up.soak.score): wrong scale-downs, lost requests, recovery."""
from __future__ import annotations

import pytest

from trimtab.controllers.core.types import Decision, Snapshot
from trimtab.controllers.shell.loop import TickRecord
from trimtab.up.soak import (BASELINE, LOST, REFUSED, FaultRecord, SoakConfig, score, verdict)
from trimtab.up.load import OK, SHED


def tick(replicas: int, current: int = 3, *, hold: str | None = None, missing=(),
         stale=(), errors=(), actuated: bool = True) -> TickRecord:
    snap = Snapshot(time_s=0.0, window_s=5.0, arrival_rate_rps=5.0,
                    missing=frozenset(missing), stale=frozenset(stale))
    d = Decision(replicas, "test")
    return TickRecord("demo/mlp", d, d, {}, current, hold, actuated, tuple(errors), snap)


def fault(start_s: float = 10.0, end_s: float = 15.0, slot_end_s: float = 40.0,
          healed_s: float | None = None) -> FaultRecord:
    return FaultRecord("prometheus_kill", "ray_serve+sidecar", start_s, end_s, slot_end_s,
                       healed_s)


def steady(times, **kw) -> list[tuple[float, TickRecord]]:
    return [(t, tick(3, **kw)) for t in times]


def test_recovery_is_the_first_healthy_tick_after_the_fault_ends() -> None:
    ticks = steady([3, 6, 9]) + [(12.0, tick(3, hold="source_error")),
                                 (15.0, tick(3, hold="stale", stale=("arrival_rate_rps",))),
                                 (18.0, tick(3, missing=("latency",))), *steady([21, 24])]
    base, row = score([fault()], ticks, [])
    assert base.fault == BASELINE and base.recover_s is None
    # 15: stale; 18: latency missing (it was not missing before the fault); 21: healthy.
    assert row.recover_s == pytest.approx(6.0)
    assert (row.scale_downs, row.wrong_scale_downs) == (0, 0)


def test_a_scale_down_before_recovery_or_on_missing_data_is_wrong() -> None:
    ticks = steady([3, 6, 9]) + [(12.0, tick(2, missing=("in_flight",))),
                                 (16.0, tick(2)),                 # fresh, but not recovered?
                                 (30.0, tick(2))]                 # after recovery: fine
    (_, row) = score([fault()], ticks, [])
    # 12: imputed data; 16 is the recovery tick itself (healthy, after the end): counted as
    # a scale-down on fresh data, as is 30.
    assert row.recover_s == pytest.approx(1.0)
    assert (row.scale_downs, row.wrong_scale_downs) == (3, 1)
    assert row.downs == ["+2.0s 3->2 test", "+6.0s 3->2 test", "+20.0s 3->2 test"]


def test_a_killed_replica_recovers_only_once_it_is_replaced() -> None:
    ticks = steady([3, 6, 9, 12, 15, 18, 21])
    (_, row) = score([fault(10.0, 10.0, 40.0, healed_s=17.0)], ticks, [])
    assert row.recover_s == pytest.approx(1.0)     # 18 - 17


def test_no_healthy_tick_in_the_slot_is_no_recovery_and_fails_the_verdict() -> None:
    ticks = steady([3, 6, 9]) + [(t, tick(3, hold="backoff", errors=("ray_serve:x",)))
                                 for t in (12, 18, 24, 36)]
    rows = score([fault()], ticks, [])
    assert rows[1].recover_s is None
    assert verdict(rows) == ["prometheus_kill: not recovered within its slot"]


def test_requests_land_in_the_slot_of_their_end_and_no_answer_is_split_off() -> None:
    requests = [(1.0, OK), (9.9, OK), (10.0, LOST), (12.0, REFUSED), (13.0, SHED),
                (39.9, OK), (40.0, LOST)]
    base, row = score([fault()], steady([3, 16]), requests)
    assert (base.lost, base.refused, base.error_answers) == (0, 0, 0)
    assert (row.lost, row.refused, row.error_answers) == (1, 1, 1)   # 40.0 is past the slot
    assert "1 request(s) lost" in verdict([row])[0]
    (_, row) = score([fault()], steady([3, 16]), [(12.5, LOST, 2.25)])
    assert row.lost_at == ["+2.5s after 2.25s"]     # ended 2.5 s into the slot, waited 2.25 s


def test_fields_missing_all_along_before_the_fault_do_not_block_recovery() -> None:
    usual = ("gpu",)
    ticks = [(t, tick(3, missing=usual)) for t in (3, 6, 9, 18)]
    (_, row) = score([fault()], ticks, [])
    assert row.recover_s == pytest.approx(3.0)


@pytest.mark.parametrize("field, value, rule", [
    ("faults", ("nope",), "unknown ['nope']"),
    ("duration_s", 70.0, "each of the 5 faults gets 6.0 s"),
])
def test_bad_soak_settings_name_the_field(field, value, rule) -> None:
    with pytest.raises(ValueError, match=rule.replace("[", r"\[").replace("]", r"\]")):
        SoakConfig(**{field: value})


def test_the_command_refuses_bad_settings_before_starting_anything(capsys, tmp_path) -> None:
    from trimtab.up.soak import soak_main

    assert soak_main(None, None, "nope", 10.0, 0, None, None) == 2
    assert "faults: unknown ['nope']" in capsys.readouterr().err
    assert soak_main(None, None, None, 10.0, 0, tmp_path / "missing.kubeconfig", None) == 2
    assert "no such file" in capsys.readouterr().err
