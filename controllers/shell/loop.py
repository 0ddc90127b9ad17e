"""The live control loop: source -> snapshot -> the policy's decide -> safety stages -> actuators."""
from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from trimtab.controllers.shell.actuators.base import ActuationError, Actuator, WorkloadRef
from trimtab.controllers.shell.clock import Clock, WallClock
from trimtab.controllers.shell.metrics import ControllerMetrics
from trimtab.controllers.core.safety import Hold, safety_stages
from trimtab.controllers.shell.sources.base import Source, TargetSelector
from trimtab.controllers.core.defaults import INTERVAL_S
from trimtab.controllers.core.types import (ALL_FIELD_GROUPS, Decision, FleetBounds, Policy,
                                            Snapshot)

log = logging.getLogger("trimtab.controller")

DEFAULT_WARMUP_S = 300.0     # like HPA's 5 min stabilisation window: no scale-down before it
MAX_BACKOFF_S = 300.0
ALL_FIELDS = ALL_FIELD_GROUPS


class Leadership(Protocol):
    def is_leader(self, now_s: float) -> bool: ...


@dataclass
class Target:
    """One steered workload: where its metrics are, its policy, shadow policies and bounds."""

    workload: WorkloadRef
    selector: TargetSelector
    policy: Policy
    model: str = "default"
    shadows: tuple[Policy, ...] = ()
    bounds: FleetBounds = field(default_factory=FleetBounds)
    warmup_s: float = DEFAULT_WARMUP_S

    @property
    def key(self) -> str:
        return self.selector.key

    @property
    def labels(self) -> tuple[str, str, str]:
        return (self.workload.namespace, self.workload.name, self.model)


@dataclass
class TargetState:
    policy_state: Any = None
    shadow_states: list[Any] = field(default_factory=list)
    applied_replicas: int | None = None     # what this loop last asked for (exported)
    applied_knobs: dict[str, object] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)          # actuator -> in a row
    backoff_until_s: dict[str, float] = field(default_factory=dict)  # actuator -> loop time
    hold: str | None = None
    last_forecast_rps: float | None = None


@dataclass(frozen=True)
class TickRecord:
    """What happened to one target in one tick (returned for tests, CLIs and the bench)."""

    key: str
    decision: Decision            # after the safety stages: what was (or would be) applied
    wanted: Decision              # what the policy asked for
    shadows: dict[str, Decision]
    current_replicas: int | None
    hold: str | None
    actuated: bool
    errors: tuple[str, ...] = ()
    seen: Snapshot | None = None  # what the policy decided on (current replicas filled in)


class ControlLoop:
    """``ControlLoop(targets, source, actuators, clock, metrics, dry_run=...)``; ``tick(now_s)``, ``run()``.

    Each target is isolated: an exception for one is logged and counted, the others go on.
    ``dry_run`` (or not being the leader) computes and exports everything and applies nothing.
    ``started_s`` is when the controller started (the warm-up counts from it); by default the
    first tick. The replay passes its fleet's start, 0.
    """

    def __init__(self, targets: Sequence[Target], source: Source, actuators: Sequence[Actuator],
                 clock: Clock, metrics: ControllerMetrics | None = None, *, dry_run: bool = False,
                 leader: Leadership | None = None, interval_s: float = INTERVAL_S,
                 window_s: float = 60.0, unix_time: Callable[[], float] = WallClock.unix_s,
                 on_tick: Callable[[list[TickRecord]], None] | None = None,
                 started_s: float | None = None) -> None:
        keys = [t.key for t in targets]
        if len(set(keys)) != len(keys):
            raise ValueError("ControlLoop: target keys must be unique")
        self.targets = list(targets)
        self.source = source
        self.actuators = list(actuators)
        self.clock = clock
        self.metrics = metrics or ControllerMetrics()
        self.dry_run = dry_run
        self.leader = leader
        self.interval_s = interval_s
        self.window_s = window_s
        self.unix_time = unix_time
        self.on_tick = on_tick
        self.started_s = started_s
        self._causes: tuple[str, ...] = ()     # the query failures last logged
        self.states = {t.key: TargetState(policy_state=t.policy.initial_state(),
                                          shadow_states=[p.initial_state() for p in t.shadows])
                       for t in self.targets}
        for t in self.targets:
            self.metrics.max_replicas.labels(*t.labels).set(t.bounds.max_replicas)

    # -- one tick ---------------------------------------------------------------------------
    def _log_causes(self, source_error: str | None) -> None:
        """One warning line naming why queries failed, when the causes change (not every
        tick: a Prometheus answering 500 for an hour logs once, and again when it heals)."""
        causes = tuple(dict.fromkeys(self.source.last_causes))
        if source_error is None and causes != self._causes:
            if causes:
                log.warning("source %s: %d queries failed: %s", self.source.name,
                            len(self.source.last_errors), "; ".join(causes[:3]))
            else:
                log.info("source %s: every query answered again", self.source.name)
        self._causes = causes if source_error is None else self._causes

    def tick(self, now_s: float) -> list[TickRecord]:
        begin_s = self.clock.now_s()
        if self.started_s is None:
            self.started_s = now_s
        source_error = None
        try:
            snapshots = self.source.read([t.selector for t in self.targets], now_s, self.window_s)
        except Exception as exc:   # a broken source must not stop the loop: every target holds
            source_error = type(exc).__name__
            self.metrics.source_errors.labels(self.source.name, source_error).inc()
            log.warning("source %s failed: %s; every target holds", self.source.name, exc)
            snapshots = {}
        for error in self.source.last_errors if source_error is None else ():
            self.metrics.source_errors.labels(self.source.name, error).inc()
        self._log_causes(source_error)
        leading = self.leader.is_leader(now_s) if self.leader is not None else True
        self.metrics.is_leader.set(1.0 if leading else 0.0)
        may_actuate = leading and not self.dry_run
        records = []
        for target in self.targets:
            try:
                records.append(self._tick_target(target, snapshots.get(target.key), now_s,
                                                 may_actuate, source_error))
            except Exception as exc:   # isolation: one target's bug never stops the others
                log.exception("target %s: tick failed", target.key)
                self.metrics.actuation_errors.labels(*target.labels, "loop",
                                                     type(exc).__name__).inc()
        self.metrics.loop_duration.observe(max(0.0, self.clock.now_s() - begin_s))
        if source_error is None and len(records) == len(self.targets) and not any(
                r.errors for r in records):
            self.metrics.last_success.set(self.unix_time())
        if self.on_tick is not None:
            self.on_tick(records)
        return records

    def _current(self, target: Target, st: TargetState, snap: Snapshot) -> int | None:
        """The replica count in force now, read every tick from the replica actuators (so a
        workload scaled by hand is seen, and no-scale-down holds against the real count);
        when none answers: the count the source reports, then the count last applied (a
        knob-only setup), then ready plus starting."""
        for act in self.actuators:
            if not act.sets_replicas:
                continue
            try:
                n = act.current_replicas(target.workload)
            except ActuationError as exc:
                self.metrics.actuation_errors.labels(*target.labels, act.name, exc.error).inc()
                continue
            if n is not None:
                return n
        if snap.desired_replicas is not None:
            return snap.desired_replicas
        if st.applied_replicas is not None:
            return st.applied_replicas
        return None if snap.ready_replicas is None else snap.current_replicas

    def _tick_target(self, target: Target, snap: Snapshot | None, now_s: float,
                     may_actuate: bool, source_error: str | None) -> TickRecord:
        st = self.states[target.key]
        if snap is None:
            snap = Snapshot(time_s=now_s, window_s=self.window_s, missing=ALL_FIELDS)
        current = self._current(target, st, snap)
        if current is not None:
            if snap.desired_replicas != current:
                snap = snap.with_(desired_replicas=current)
            if snap.starting_replicas is None and snap.ready_replicas is not None:
                # Asked for but not yet exporting metrics: starting (cold start in progress).
                snap = snap.with_(starting_replicas=max(0, current - snap.ready_replicas))
        wanted, st.policy_state = target.policy.decide(snap, st.policy_state, now_s)
        shadows = {}
        for i, shadow in enumerate(target.shadows):
            d, st.shadow_states[i] = shadow.decide(snap, st.shadow_states[i], now_s)
            shadows[shadow.name] = d
        assert self.started_s is not None
        warming = now_s - self.started_s < target.warmup_s
        decision, hold = safety_stages(wanted, snap, current, target.bounds, warming,
                                       source_error is not None)
        errors: list[str] = []
        actuated = False
        if may_actuate:
            actuated, paused, backing_off = self._actuate(target, st, decision, now_s, errors)
            if paused:
                hold = Hold("paused", decision.reason)
            elif backing_off and hold is None and decision.valid:
                hold = Hold("backoff", f"retrying after errors: {backing_off}")
        self._export(target, st, snap, wanted, decision, shadows, hold)
        self._log(target, st, current, wanted, decision, hold, actuated, errors)
        return TickRecord(target.key, decision, wanted, shadows, current,
                          hold.metric if hold else None, actuated, tuple(errors), snap)

    def _actuate(self, target: Target, st: TargetState, decision: Decision, now_s: float,
                 errors: list[str]) -> tuple[bool, bool, list[str]]:
        """Each actuator separately: one failing (and backing off) never blocks another."""
        paused = False
        waiting = []
        for act in self.actuators:
            if now_s < st.backoff_until_s.get(act.name, -math.inf):
                waiting.append(act.name)
                continue
            try:
                if decision.valid:
                    applied = act.apply(target.workload, decision, decision.reason)
                else:
                    # Holding: apply nothing new, but pods that started late get what is in force.
                    resynced = act.resync(target.workload)
                    if resynced is None:
                        continue
                    applied = resynced
            except Exception as exc:   # an actuator failure is counted, never a crash
                code = exc.error if isinstance(exc, ActuationError) else type(exc).__name__
                errors.append(f"{act.name}:{code}")
                self.metrics.actuation_errors.labels(*target.labels, act.name, code).inc()
                log.warning("target %s: %s failed (%s): %s", target.key, act.name, code, exc)
                n = st.failures[act.name] = st.failures.get(act.name, 0) + 1
                # Exponential backoff in loop time (no sleeping): after n failures in a row,
                # skip 0, 1, 3, 7... ticks (capped), so a throttling API server gets room.
                # The half interval keeps a slightly early tick from retrying too soon.
                if n > 1:
                    st.backoff_until_s[act.name] = now_s + min(
                        self.interval_s * (2 ** (n - 1) - 0.5), MAX_BACKOFF_S)
                if act.sets_replicas:
                    st.applied_replicas = None   # unsure what landed
                continue
            st.failures.pop(act.name, None)
            st.backoff_until_s.pop(act.name, None)
            paused = paused or applied.note == "paused"
            if act.sets_replicas and decision.valid:
                # Paused: a person steers the workload; nothing of ours is in force.
                st.applied_replicas = None if applied.note == "paused" else decision.replicas
        if not any(a.sets_replicas for a in self.actuators) and decision.valid \
                and not errors and not waiting:
            st.applied_replicas = decision.replicas
        return decision.valid and not errors and not waiting, paused, waiting

    # -- outputs ----------------------------------------------------------------------------
    def _export(self, target: Target, st: TargetState, snap: Snapshot, wanted: Decision,
                decision: Decision, shadows: dict[str, Decision], hold: Hold | None) -> None:
        m, lab = self.metrics, target.labels
        for name, d in [(target.policy.name, wanted), *shadows.items()]:
            reason = decision.reason if d is wanted else d.reason
            m.decisions.labels(*lab, name, reason).inc()
            m.desired_replicas.labels(*lab, name).set(d.replicas)
            if d.concurrency_limit is not None:
                m.desired_concurrency.labels(*lab, name).set(d.concurrency_limit)
            if d.max_batch_size is not None:
                m.desired_batch.labels(*lab, name).set(d.max_batch_size)
            if d.batch_timeout_ms is not None:
                m.desired_batch_timeout.labels(*lab, name).set(d.batch_timeout_ms / 1000.0)
        if st.applied_replicas is not None:
            m.applied_replicas.labels(*lab).set(st.applied_replicas)
        if snap.ready_replicas is not None:
            m.current_replicas.labels(*lab).set(snap.ready_replicas)
        if wanted.forecast_rps is not None:
            m.forecast_rps.labels(*lab).set(wanted.forecast_rps)
        actual = snap.arrival_rate_rps
        if actual is not None and math.isfinite(actual):
            m.observed_rps.labels(*lab).set(actual)
            # The previous tick's forecast against what arrived since (a one-interval check).
            if st.last_forecast_rps is not None and actual > 0:
                m.forecast_error.labels(*lab).set(abs(st.last_forecast_rps - actual) / actual)
        st.last_forecast_rps = wanted.forecast_rps
        m.set_holding(lab, hold.metric if hold else None)

    def _log(self, target: Target, st: TargetState, current: int | None, wanted: Decision,
             decision: Decision, hold: Hold | None, actuated: bool, errors: list[str]) -> None:
        held = hold.metric if hold else None
        changed = current is not None and decision.replicas != current
        if not (changed or errors or held != st.hold):
            return
        st.hold = held
        if not log.isEnabledFor(logging.INFO):   # a replay: no JSON built for nobody
            return
        log.info(json.dumps({
            "event": "decision", "target": target.key, "policy": target.policy.name,
            "reason": decision.reason, "wanted_replicas": wanted.replicas,
            "replicas": decision.replicas, "current_replicas": current, "holding": held,
            "why": hold.why if hold else None, "actuated": actuated, "errors": errors,
            "dry_run": self.dry_run}, sort_keys=True))

    # -- forever ----------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, ticks: int | None = None) -> int:
        """Tick every ``interval_s`` until ``stop`` is set or ``ticks`` ran; returns ticks run."""
        stop = stop or threading.Event()
        done = 0
        next_s = self.clock.now_s()
        while not stop.is_set() and (ticks is None or done < ticks):
            self.tick(self.clock.now_s())
            done += 1
            next_s += self.interval_s
            if ticks is not None and done >= ticks:
                break
            while not stop.is_set() and self.clock.now_s() < next_s:
                # Sleep in short steps so SIGTERM (stop) is honoured within half a second.
                self.clock.sleep_until(min(next_s, self.clock.now_s() + 0.5))
        return done
