"""Ray Serve's default autoscaling policy (replica_queue_length_autoscaling_policy).

Total ongoing requests (running at replicas plus queued at handles) averaged over
``look_back_period_s`` (30 s) of reports that replicas push every 10 s; desired =
total / target_ongoing_requests (default 2) smoothed by the up/down factors; a change is made
only after the same direction has been decided continuously for ``upscale_delay_s`` (30 s) or
``downscale_delay_s`` (600 s), measured in elapsed seconds as current Ray does. Scaling to
zero takes two steps: N -> 1 after ``downscale_delay_s``, then 1 -> 0 after
``downscale_to_zero_delay_s`` (unset by default: ``downscale_delay_s``). From 0 running
replicas any request scales up at once to ``ceil(upscaling_factor)`` (1 by default), then
the bounds. Ray's controller loop runs every 0.1 s; here the policy ticks every second (the
metric only changes every 10 s, so nothing is lost).

Not modelled: aggregation functions other than mean; target_capacity (capacity-adjusted
bounds); the deprecated upscale/downscale_smoothing_factor aliases; custom and
application-level policies; handle-side and replica-side metrics are one total here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import Field

from trimtab.controllers.core.baselines.window import Sample, add_sample, window_mean
from trimtab.controllers.core.binding import PolicyConfig
from trimtab.controllers.core.guards import clamp, hold_on_unreadable
from trimtab.controllers.core.types import (
    FIELD_IN_FLIGHT, REASON_SCALE_DOWN, REASON_SCALE_UP, REASON_STABILIZING, REASON_STEADY,
    Decision, Snapshot,
)

TICK_S = 1.0
REASON_DELAY_UP = "ray_upscale_delay"
REASON_FROM_ZERO = "ray_scale_from_zero"
_DELAY_EPS_S = 1e-6     # autoscaling_policy.py _DELAY_ELAPSED_EPS_S: float slack on elapsed time


class RayConfig(PolicyConfig):
    target_ongoing_requests: float = Field(2.0, gt=0)
    # None keeps the fleet's own per-replica limit (Ray's default is 5; see ARCHITECTURE.md).
    max_ongoing_requests: int | None = Field(None, gt=0)
    look_back_period_s: float = Field(30.0, gt=0)
    metrics_interval_s: float = Field(10.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)
    # 1 -> 0 waits this long; None (Ray's default) uses downscale_delay_s.
    downscale_to_zero_delay_s: float | None = Field(None, ge=0)
    smoothing_factor: float = Field(1.0, gt=0)
    upscaling_factor: float | None = Field(None, gt=0)
    downscaling_factor: float | None = Field(None, gt=0)


@dataclass(frozen=True)
class RayState:
    samples: tuple[Sample, ...] = ()
    reported: tuple[Sample, ...] = ()      # what replicas last pushed (one per 10 s)
    last_report_s: float | None = None
    target_replicas: int | None = None     # Ray's own curr_target_num_replicas
    direction: int = 0                      # +1 up, -1 down, 0 none
    direction_since_s: float = 0.0


def initial_state(config: RayConfig) -> RayState:
    return RayState()


def desired_replicas(total: float, running: int, config: RayConfig) -> int:
    """autoscaling_policy.py _calculate_desired_num_replicas (before delays).

    Example: 4 running, total 3 ongoing, target 2, downscaling factor 0.5: error ratio 0.375,
    smoothed 1 + (0.375 - 1) * 0.5 = 0.6875, ceil(4 * 0.6875) = 3.
    """
    b = config.bounds
    error_ratio = total / (config.target_ongoing_requests * running)
    if error_ratio >= 1:
        factor = config.upscaling_factor or config.smoothing_factor
    else:
        factor = config.downscaling_factor or config.smoothing_factor
    smoothed = 1 + (error_ratio - 1) * factor
    desired = math.ceil(running * smoothed - 1e-9)
    if math.ceil(running * error_ratio - 1e-9) < running and desired == running:
        desired -= 1   # a downscale stuck by the smoothing factor steps down by one
    return max(b.min_replicas, min(b.max_replicas, desired))


def decide(snapshot: Snapshot, config: RayConfig, state: RayState, now_s: float
           ) -> tuple[Decision, RayState]:
    # "No series" (Snapshot.empty) holds like a failed read: Ray Serve queries no Prometheus
    # (replicas and handles push their counts), so upstream has no empty-result rule to follow.
    hold = hold_on_unreadable(snapshot, [FIELD_IN_FLIGHT])
    if hold is not None:
        return hold, state
    total_now = float(snapshot.in_flight or 0.0) + float(snapshot.queue_depth or 0.0)
    keep_s = config.look_back_period_s + config.metrics_interval_s
    samples = add_sample(state.samples, now_s, snapshot.window_s, total_now, keep_s)
    reported, last_report_s = state.reported, state.last_report_s
    if last_report_s is None or now_s - last_report_s >= config.metrics_interval_s - 1e-9:
        mean = window_mean(samples, now_s, config.metrics_interval_s) or 0.0
        reported = add_sample(reported, now_s, config.metrics_interval_s, mean, keep_s)
        last_report_s = now_s
    total = window_mean(reported, last_report_s, config.look_back_period_s) or 0.0
    running = snapshot.ready_replicas or 0
    target = state.target_replicas if state.target_replicas is not None \
        else snapshot.current_replicas
    limit = config.max_ongoing_requests

    replicas, reason, direction, since_s = step(
        total, total_now > 0 or total > 0, running, target, state.direction,
        state.direction_since_s, now_s, config)
    n, why = clamp(replicas, config.bounds.min_replicas, config.bounds.max_replicas)
    return (Decision(replicas=n, reason=why or reason, concurrency_limit=limit,
                     details={"total_ongoing": total}),
            RayState(samples, reported, last_report_s, n, direction, since_s))


def step(total: float, has_requests: bool, running: int, target: int, direction: int,
         direction_since_s: float, now_s: float, config: RayConfig
         ) -> tuple[int, str, int, float]:
    """One policy call before the bounds: (replicas, reason, direction, direction since).

    autoscaling_policy.py: the cold-start fast path, then the scaling factors
    (``desired_replicas``), then _apply_delay_logic. ``target`` is Ray's
    curr_target_num_replicas, ``running`` its current_num_replicas.
    """
    if running == 0:
        if has_requests:
            # _get_cold_start_scale_up_replicas: max(ceil(1 * upscaling factor), target),
            # at once (no delay).
            factor = config.upscaling_factor or config.smoothing_factor
            return max(math.ceil(factor), target), REASON_FROM_ZERO, 0, now_s
        return target, REASON_STEADY, 0, now_s
    desired = desired_replicas(total, running, config)
    if desired > target:
        since_s = direction_since_s if direction == 1 else now_s
        if now_s - since_s + _DELAY_EPS_S >= config.upscale_delay_s:
            return desired, REASON_SCALE_UP, 0, now_s
        return target, REASON_DELAY_UP, 1, since_s
    if desired < target:
        since_s = direction_since_s if direction == -1 else now_s
        delay_s = config.downscale_delay_s
        if target == 1:
            # _apply_delay_logic: only 1 -> 0 scales to zero, after its own delay.
            if config.downscale_to_zero_delay_s is not None:
                delay_s = config.downscale_to_zero_delay_s
        else:
            desired = max(1, desired)     # N -> 0 goes N -> 1 first
        if now_s - since_s + _DELAY_EPS_S >= delay_s:
            return desired, REASON_SCALE_DOWN, 0, now_s
        return target, REASON_STABILIZING, -1, since_s
    return target, REASON_STEADY, 0, now_s
