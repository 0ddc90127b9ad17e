"""Each default once: every place that takes the interval, the replica bound, the refit period
or the SLO target takes it from controllers/core/defaults.py (or trimtab/common/slo.py), and the
trimtab policy's tuning is its config's, with the core modules' defaults."""
from __future__ import annotations

import inspect
from dataclasses import MISSING, fields
from typing import Any, Callable

import pytest
from pydantic import BaseModel, ValidationError

from trimtab.common.slo import SLO_TARGET
from trimtab.controllers.core import budget, capacity, defaults, forecast, knobs, peaks
from trimtab.controllers.core.policy import TrimtabConfig
from trimtab.controllers.core.registry import make_policy
from tests.controllers.builders import bounds


def _field(model: type[BaseModel], name: str) -> Callable[[], Any]:
    return lambda: model.model_fields[name].default


def _param(fn: Callable[..., Any], name: str) -> Callable[[], Any]:
    return lambda: inspect.signature(fn).parameters[name].default


def _dataclass(cls: type, name: str) -> Callable[[], Any]:
    return lambda: next(f.default for f in fields(cls) if f.name == name)


def _cases() -> list[Any]:
    from trimtab.alerts.config import MonitoringConfig
    from trimtab.controllers.core.static import StaticPolicy
    from trimtab.controllers.core.types import FleetBounds
    from trimtab.controllers.shell import bench, config as shell
    from trimtab.controllers.shell.loop import ControlLoop
    from trimtab.sim import scenario as sim
    from trimtab.up.run import LiveConfig

    interval, top, refit = defaults.INTERVAL_S, defaults.MAX_REPLICAS, defaults.REFIT_S
    return [
        pytest.param(_field(shell.ControllerConfig, "interval_s"), interval,
                     id="controller-interval"),
        pytest.param(_field(sim.ControllerConfig, "interval_s"), interval, id="scenario-interval"),
        pytest.param(_field(TrimtabConfig, "interval_s"), interval, id="trimtab-interval"),
        pytest.param(_dataclass(StaticPolicy, "interval_s"), interval, id="static-interval"),
        pytest.param(_param(make_policy, "interval_s"), interval, id="make-policy-interval"),
        pytest.param(_param(ControlLoop.__init__, "interval_s"), interval, id="loop-interval"),
        pytest.param(_param(bench.run_bench, "interval_s"), interval, id="bench-interval"),
        pytest.param(_dataclass(FleetBounds, "max_replicas"), top, id="bounds-max"),
        pytest.param(_field(shell.ReplicaBounds, "max"), top, id="controller-max"),
        pytest.param(_field(sim.ReplicasConfig, "max"), top, id="scenario-max"),
        pytest.param(_dataclass(forecast.ForecastConfig, "refit_s"), refit, id="forecast-refit"),
        pytest.param(_field(TrimtabConfig, "refit_s"), refit, id="trimtab-refit"),
        pytest.param(_dataclass(FleetBounds, "slo_target"), SLO_TARGET, id="bounds-slo"),
        pytest.param(_field(shell.SloConfig, "target"), SLO_TARGET, id="controller-slo"),
        pytest.param(_field(sim.SloConfig, "target"), SLO_TARGET, id="scenario-slo"),
        pytest.param(_field(MonitoringConfig, "slo_target"), SLO_TARGET, id="monitoring-slo"),
        pytest.param(_field(LiveConfig, "slo_target"), SLO_TARGET, id="live-slo"),
    ]


@pytest.mark.parametrize("read, expected", _cases())
def test_each_default_comes_from_the_one_place(read: Callable[[], Any], expected: Any) -> None:
    assert read() == expected


def _slo_models() -> list[Any]:
    from trimtab.alerts.config import MonitoringConfig
    from trimtab.controllers.shell import config as shell
    from trimtab.sim import scenario as sim
    from trimtab.up.run import LiveConfig

    return [pytest.param(shell.SloConfig, "target", id="controller"),
            pytest.param(sim.SloConfig, "target", id="scenario"),
            pytest.param(MonitoringConfig, "slo_target", id="monitoring"),
            pytest.param(LiveConfig, "slo_target", id="live")]


@pytest.mark.parametrize("value, ok", [(0.0, False), (0.5, True), (0.999, True), (1.0, False),
                                       (1.5, False)], ids=["zero", "half", "three-nines",
                                                           "one-no-budget", "over-one"])
@pytest.mark.parametrize("model, name", _slo_models())
def test_one_slo_target_rule_everywhere(model: type[BaseModel], name: str, value: float,
                                        ok: bool) -> None:
    """0 < target < 1: a target of 1 leaves no error budget (would be accepted by le=1)."""
    if ok:
        assert getattr(model(**{name: value}), name) == value
    else:
        with pytest.raises(ValidationError, match=name):
            model(**{name: value})


def test_the_old_monitoring_slo_key_is_read_with_a_deprecation_warning() -> None:
    from trimtab.alerts.config import ConfigError, load_config

    with pytest.warns(DeprecationWarning, match="slo_objective is deprecated, write slo_target"):
        assert load_config({"slo_objective": 0.995}).slo_target == 0.995
    with pytest.raises(ConfigError, match="both given"):
        load_config({"slo_objective": 0.995, "slo_target": 0.99})


# --- the trimtab policy's tuning: fields of its config ---------------------------------------
def _tuning() -> list[Any]:
    out = []
    for cls in (forecast.ForecastConfig, peaks.PeakConfig, budget.BudgetConfig):
        for f in fields(cls):
            if f.name != "peaks":
                out.append(pytest.param(f.name, f.default, id=f"{cls.__name__}.{f.name}"))
    out += [pytest.param("knob_min_change", knobs.MIN_CHANGE, id="knobs.MIN_CHANGE"),
            pytest.param("capacity_ew_weight", capacity.EW_WEIGHT, id="capacity.EW_WEIGHT"),
            pytest.param("max_utilisation", capacity.MAX_UTILISATION,
                         id="capacity.MAX_UTILISATION")]
    return out


@pytest.mark.parametrize("name, default", _tuning())
def test_every_tuning_constant_is_a_config_field_with_the_modules_default(name, default):
    assert default is not MISSING
    assert TrimtabConfig.model_fields[name].default == default


@pytest.mark.parametrize("spec, read, value", [
    ("trimtab:target_burn=0.5", lambda c: c.budget_config().target_burn, 0.5),
    ("trimtab:headroom_max=2", lambda c: c.budget_config().headroom_max, 2.0),
    ("trimtab:ratio_decay=0.98", lambda c: c.forecast_config().peaks.ratio_decay, 0.98),
    ("trimtab:rise_ratio=1.3", lambda c: c.forecast_config().peaks.rise_ratio, 1.3),
    ("trimtab:fit_tail_seasons=3", lambda c: c.forecast_config().fit_tail_seasons, 3),
    ("trimtab:refit_s=600", lambda c: c.forecast_config().refit_s, 600.0),
], ids=["target-burn", "headroom-max", "ratio-decay", "rise-ratio", "fit-tail", "refit"])
def test_a_spec_sets_a_tuning_constant(spec, read, value):
    assert read(make_policy(spec, bounds()).config) == value
    assert read(make_policy("trimtab", bounds()).config) != value     # not the default


def test_a_bad_tuning_value_names_the_parameter_and_rule():
    from trimtab.controllers.core.spec import SpecError

    with pytest.raises(SpecError, match="ratio_decay = 1.5"):
        make_policy("trimtab:ratio_decay=1.5", bounds())
    with pytest.raises(ValidationError, match="band_edges"):
        TrimtabConfig(band_edges=(0.6, 0.3))
