"""The batching helper: user_config["trimtab"] is checked, then applied to @serve.batch methods."""
from __future__ import annotations

import pytest

from trimtab.collectors.ray_batching import (BatchConfigError, BatchSettings, TrimtabBatching,
                                     apply_batch_settings, current_batch_settings,
                                     parse_batch_settings)


class FakeBatchMethod:
    """Stands in for what @serve.batch returns: a callable with the two setters."""

    def __init__(self) -> None:
        self.size, self.timeout_s = 4, 0.01

    def __call__(self, items):
        return items

    def set_max_batch_size(self, n: int) -> None:
        self.size = n

    def set_batch_wait_timeout_s(self, t: float) -> None:
        self.timeout_s = t

    def _get_max_batch_size(self) -> int:
        return self.size

    def _get_batch_wait_timeout_s(self) -> float:
        return self.timeout_s


class Model(TrimtabBatching):
    trimtab_batch_methods = ("predict",)

    def __init__(self) -> None:
        self.predict = FakeBatchMethod()


@pytest.mark.parametrize("user_config, expected", [
    (None, BatchSettings()),
    ({}, BatchSettings()),
    ({"other": 1}, BatchSettings()),
    ({"trimtab": {"max_batch_size": 8}}, BatchSettings(8, None)),
    ({"trimtab": {"batch_wait_timeout_s": 0}}, BatchSettings(None, 0.0)),
    ({"trimtab": {"max_batch_size": 2, "batch_wait_timeout_s": 0.02}}, BatchSettings(2, 0.02)),
], ids=["none", "empty", "other-keys-only", "size", "zero-timeout", "both"])
def test_parse_accepts_valid_sections(user_config, expected):
    assert parse_batch_settings(user_config) == expected


@pytest.mark.parametrize("section, field", [
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"max_batch_size": 2.5}, "max_batch_size"),
    ({"max_batch_size": True}, "max_batch_size"),
    ({"batch_wait_timeout_s": -0.1}, "batch_wait_timeout_s"),
    ({"batch_wait_timeout_s": float("nan")}, "batch_wait_timeout_s"),
    ({"batch_size": 4}, "unknown key"),
], ids=["zero", "float", "bool", "negative-timeout", "nan-timeout", "unknown-key"])
def test_parse_rejects_bad_values_naming_the_field(section, field):
    with pytest.raises(BatchConfigError, match=field):
        parse_batch_settings({"trimtab": section})


def test_reconfigure_sets_the_batch_method_and_keeps_unset_values():
    m = Model()
    m.reconfigure({"trimtab": {"max_batch_size": 12}})
    assert current_batch_settings(m, "predict") == BatchSettings(12, 0.01)
    m.reconfigure({"trimtab": {"batch_wait_timeout_s": 0.05}})
    assert current_batch_settings(m, "predict") == BatchSettings(12, 0.05)


def test_a_method_that_is_not_batched_is_named_in_the_error():
    class Plain(TrimtabBatching):
        trimtab_batch_methods = ("predict",)

        def predict(self, items):
            return items

    with pytest.raises(BatchConfigError, match="Plain.predict"):
        Plain().reconfigure({"trimtab": {"max_batch_size": 2}})


def test_the_real_serve_batch_decorator_exposes_the_setters_the_helper_calls():
    serve = pytest.importorskip("ray.serve", reason="trimtab[ray] extra not installed")

    class Real(TrimtabBatching):
        trimtab_batch_methods = ("predict",)

        @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
        async def predict(self, items):
            return items

    r = Real()
    apply_batch_settings(r, ("predict",), BatchSettings(9, 0.03))
    assert current_batch_settings(r, "predict") == BatchSettings(9, 0.03)
