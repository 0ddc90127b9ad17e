"""Defaults shared by the controller's configs, the simulator's scenarios and the CLIs, each once.

Every config field, function parameter and CLI option for one of these takes its default from
here, so two places cannot drift apart.
"""
from __future__ import annotations

from trimtab.common.slo import SLO_TARGET

INTERVAL_S = 15.0          # control period: HPA's --horizontal-pod-autoscaler-sync-period
MAX_REPLICAS = 10          # upper replica bound when a config names none: caps a live
                           # fleet's spend; every bundled scenario sets its own
REFIT_S = 900.0            # the forecaster refits its smoothing parameters this often

__all__ = ["INTERVAL_S", "MAX_REPLICAS", "REFIT_S", "SLO_TARGET"]
