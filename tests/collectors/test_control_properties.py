"""Property: any JSON body to the control API gets settings or an InvalidSettings naming a field."""
from __future__ import annotations

from hypothesis import given, strategies as st
from prometheus_client import CollectorRegistry

from trimtab.collectors.control import FIELDS, ControlState, InvalidSettings
from trimtab.collectors.settings import ControlSettings

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12)
BODIES = JSON | st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=len(FIELDS))


def _state() -> ControlState:
    return ControlState(ControlSettings(concurrency_limit=4, queue_timeout_s=1.0), ("m1",),
                        CollectorRegistry())


@given(BODIES)
def test_every_body_gets_settings_or_a_named_error(body):
    state = _state()
    before = state.settings
    try:
        merged = state.merged(state.parse_change(body))
    except InvalidSettings as exc:
        assert exc.field == "body" or exc.field in FIELDS or (
            isinstance(body, dict) and exc.field in body), exc.field
        assert str(exc)
        assert state.settings == before            # nothing applied
        return
    assert isinstance(merged, ControlSettings)
    for name in FIELDS:                           # what was accepted is what was asked for
        if isinstance(body, dict) and name in body and body[name] is not None:
            assert getattr(merged, name) == body[name]
    assert isinstance(merged.concurrency_limit, int) and merged.concurrency_limit >= 1
