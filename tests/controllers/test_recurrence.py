"""The idle-then-burst memory: spells learned from costly returns, the fleet held through them."""
from __future__ import annotations

import pytest

from trimtab.controllers.core import recurrence
from trimtab.controllers.core.recurrence import RecurrenceConfig, RecurrenceState

CFG = RecurrenceConfig()
INTERVAL_S = 15.0


def run(ticks: list[tuple[int, int, bool]], cfg: RecurrenceConfig = CFG,
        state: RecurrenceState = RecurrenceState()) -> tuple[RecurrenceState, list[int]]:
    """Feed (need now, planned, missed) one interval apart; the state and each tick's floor."""
    floors = []
    for k, (need, planned, missed) in enumerate(ticks):
        now_s = (k + 1) * INTERVAL_S
        state = recurrence.observe(state, need, planned, missed, now_s, cfg)
        floors.append(recurrence.floor(state, cfg, INTERVAL_S, now_s))
    return state, floors


BURST = (20, 30, False)
IDLE = (1, 2, False)


def test_a_burst_after_idle_that_missed_teaches_the_hold():
    # A burst, 10 quiet ticks (150 s), a burst that missed: one costly return of a 150 s spell.
    state, floors = run([BURST] + [IDLE] * 10 + [(20, 30, True)] + [IDLE] * 30)
    assert state.quiet_s == (150.0,) and state.costly == 1
    assert recurrence.hold_s(state, CFG, INTERVAL_S) == 2.0 * 150.0 + INTERVAL_S
    # Before the costly return nothing is held; after it, the planned 30 for 315 s of quiet.
    assert floors[:11] == [0] * 11
    quiet = floors[12:]
    assert quiet[:22] == [30] * 22 and quiet[22:] == [0] * 8   # 0 to 315 s into the spell


def test_a_return_that_found_the_fleet_ready_teaches_nothing():
    state, floors = run([BURST] + [IDLE] * 10 + [BURST] + [IDLE] * 10)
    assert state.quiet_s == (150.0,) and state.costly == 0
    assert set(floors) == {0}


def test_misses_in_the_window_after_the_return_count():
    # The burst begins at the end of a window: its misses land in the next one.
    state, _ = run([BURST] + [IDLE] * 4 + [(5, 30, False), (20, 30, True)])
    assert state.costly == 1 and state.quiet_s == (60.0,)


@pytest.mark.parametrize("ticks, quiet", [
    ([(10, 12, False), (8, 10, False), (9, 11, False)] * 5, False),   # varying, never quiet
    ([(10, 12, False), (2, 3, False)], False),     # 2 > 15 % of 10: a lull, not quiet
    ([(10, 12, False), (1, 2, False)], True),      # one replica: quiet
    ([(40, 50, False), (6, 8, False)], True),      # 6 <= 15 % of 40
])
def test_what_counts_as_quiet(ticks, quiet):
    state, _ = run(ticks)
    assert (state.quiet_since_s is not None) is quiet


def test_a_low_burst_after_a_high_one_is_still_a_return():
    # Burst heights differ: 5 is a fifth of 20 and over one replica.
    state, _ = run([BURST] + [IDLE] * 4 + [(5, 10, True)])
    assert state.quiet_since_s is None and state.costly == 1


def test_the_hold_is_capped_and_the_memory_bounded():
    cfg = RecurrenceConfig(max_hold_s=200.0, memory=3)
    ticks = [BURST]
    for gap in (2, 3, 4, 5, 60):
        ticks += [IDLE] * gap + [(20, 30, True)]
    state, _ = run(ticks, cfg)
    assert state.quiet_s == (60.0, 75.0, 900.0)
    assert recurrence.hold_s(state, cfg, INTERVAL_S) == 200.0


def test_policy_holds_through_a_learned_quiet_spell():
    """End to end through the policy's config: the fields bind to RecurrenceConfig."""
    from trimtab.controllers.core.policy import TrimtabConfig
    from trimtab.controllers.core.types import FleetBounds

    config = TrimtabConfig(bounds=FleetBounds(), hold_factor=3.0, max_hold_s=600.0)
    assert config.recurrence_config() == RecurrenceConfig(hold_factor=3.0, max_hold_s=600.0)
