"""TTFT and TPOT objectives per target in the controller config (issue 16)."""
from __future__ import annotations

import pytest

from trimtab.controllers.shell.config import ConfigError, parse_config


def _config(slo: dict) -> dict:
    return {"targets": [{"workload": {"namespace": "prod", "name": "llama"}, "model": "llama",
                         "slo": slo}]}


def test_ttft_and_tpot_objectives_beside_the_end_to_end_one():
    cfg = parse_config(_config({"latency_s": 30.0, "ttft": {"bound_s": 1.0},
                                "tpot": {"bound_s": 0.1, "target": 0.95}}))
    slo = cfg.targets[0].slo
    assert (slo.ttft.bound_s, slo.ttft.target) == (1.0, 0.99)     # the shared default target
    assert (slo.tpot.bound_s, slo.tpot.target) == (0.1, 0.95)
    assert slo.latency_s == 30.0


def test_a_request_level_target_has_no_token_objectives():
    slo = parse_config(_config({})).targets[0].slo
    assert slo.ttft is None and slo.tpot is None


@pytest.mark.parametrize("slo, where, rule", [
    ({"ttft": {"bound_s": 1.5}}, "targets.0.slo.ttft.bound_s = 1.5", "no bucket bound"),
    ({"tpot": {"bound_s": 0.06}}, "targets.0.slo.tpot.bound_s = 0.06", "no bucket bound"),
    ({"tpot": {"bound_s": 0.1, "target": 1.0}}, "targets.0.slo.tpot.target = 1.0", "less than 1"),
    ({"ttft": {"target": 0.9}}, "targets.0.slo.ttft.bound_s", "required"),
    ({"ttft": {"bound_s": 1.0, "p99": True}}, "targets.0.slo.ttft.p99", "xtra"),
])
def test_bad_token_objectives_name_key_value_and_rule(slo, where, rule):
    with pytest.raises(ConfigError) as err:
        parse_config(_config(slo), "ctl.yaml")
    text = str(err.value)
    assert "ctl.yaml" in text and where in text and rule in text, text
