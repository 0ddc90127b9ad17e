"""The SLO target's one name (``slo_target``), one rule (0 < target < 1) and one default.

A target is the share of requests that must meet the latency threshold. It must be below 1:
the error budget is ``1 - target``, and a target of 1 leaves none (every burn rate divides by
it, every miss is an overspend, the capacity model's q-quantile is infinite). Sections named
``slo`` spell it ``target`` (``slo.target``, as ``slo.latency_s`` beside ``slo_latency_s``).
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

SLO_TARGET = 0.99          # 99 % of requests within the latency threshold

# The field type every config uses: ``slo_target: SloTarget = SLO_TARGET``.
SloTarget = Annotated[float, Field(gt=0, lt=1)]
