"""``trimtab up --soak``: the live loop under steady load while faults are injected in turn.

Each fault gets a slot of the schedule: it is injected at the slot's start and the rest of the
slot watches the loop heal. Per fault: the scale-downs applied, the wrong ones (applied on a
tick whose data was missing, stale or held, or before the loop had recovered), the requests
that got an error answer, that were refused (never connected: safe to retry) and that were
lost (connected, no answer at all), and the time from the fault's end to the first tick with
fresh data and no hold. The Ray phase steers Ray Serve with the Ray Serve and sidecar
actuators; the Kubernetes faults (409/429/500 answered at the HTTP layer of the official
client) run as their own phase against a real API server with the Kubernetes actuator.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trimtab.collectors import names as n
from trimtab.controllers.shell.loop import TickRecord
from trimtab.up import wall_clock
from trimtab.up.load import ERROR, OK, SHED, TIMEOUT, LoadGenerator

log = logging.getLogger("trimtab.soak")

REFUSED, LOST = "refused", "lost"          # no answer: never connected / connected, then nothing
RAY_FAULTS = ("prometheus_kill", "sidecar_kill", "replica_kill", "upstream_hang", "metric_nan")
KUBE_FAULTS = ("kube_409", "kube_429", "kube_500")
EXTRA_FAULTS = ("sidecar_crash",)          # SIGKILL: what was in flight in the proxy is lost
BASELINE = "baseline"


class SoakConfig(BaseModel):
    """One soak: the steady load, the schedule and the controller's pace; errors name the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duration_s: float = Field(420.0, ge=60, le=3600)     # of load, the Ray phase
    settle_s: float = Field(40.0, ge=10)                 # healthy time before the first fault
    fault_s: float = Field(10.0, gt=0, le=60)            # Prometheus down, upstream hung, NaN
    base_rps: float = Field(8.0, gt=0, le=40)
    interval_s: float = Field(3.0, gt=0, le=30)
    faults: tuple[str, ...] = RAY_FAULTS
    seed: int = 0

    @model_validator(mode="after")
    def _known(self) -> "SoakConfig":
        bad = [f for f in self.faults if f not in RAY_FAULTS + EXTRA_FAULTS]
        if bad:
            raise ValueError(f"faults: unknown {bad}; known: {list(RAY_FAULTS + EXTRA_FAULTS)}"
                             f" (the Kubernetes faults run with --kubeconfig)")
        if not self.faults:
            raise ValueError("faults: name at least one")
        if self.slot_s() < self.fault_s + 2 * self.interval_s:
            raise ValueError(f"duration_s = {self.duration_s}: each of the {len(self.faults)}"
                             f" faults gets {self.slot_s():.1f} s, less than fault_s +"
                             f" 2 intervals ({self.fault_s + 2 * self.interval_s:g} s)")
        return self

    def slot_s(self) -> float:
        return (self.duration_s - self.settle_s) / max(1, len(self.faults))


@dataclass
class FaultRecord:
    """One injected fault, in the controller's time base (seconds since it started)."""

    name: str
    actuator: str
    start_s: float
    end_s: float                   # the fault removed (restarted, resumed, cleared)
    slot_end_s: float              # the next fault's start (or the run's end)
    healed_s: float | None = None  # the workload whole again (a killed replica replaced)
    note: str = ""


@dataclass
class FaultRow:
    """One line of the table."""

    fault: str
    actuator: str
    at_s: float | None
    fault_s: float | None
    scale_downs: int
    wrong_scale_downs: int
    error_answers: int | None
    refused: int | None
    lost: int | None
    recover_s: float | None
    ticks: int
    unhealthy_ticks: int           # the fault as the loop saw it: held, stale, missing, errors
    note: str = ""
    # Each scale-down of the slot: seconds after the slot's start, from -> to, the reason.
    downs: list[str] = field(default_factory=list)
    # Each lost request: when it ended (seconds after the slot's start) and how long it waited.
    lost_at: list[str] = field(default_factory=list)


# -- scoring (pure) ------------------------------------------------------------------------
def baseline_missing(ticks: Sequence[tuple[float, TickRecord]], before_s: float) -> frozenset:
    """Fields missing on every tick of the second half of the time before the first fault."""
    seen = [r.seen.missing for t, r in ticks if before_s / 2 <= t < before_s and r.seen]
    out = frozenset(seen[0]) if seen else frozenset()
    for m in seen[1:]:
        out &= m
    return out


def healthy(rec: TickRecord, usual_missing: frozenset) -> bool:
    """Fresh data, no hold, no actuation error: the loop is steering normally."""
    snap = rec.seen
    return (rec.hold is None and not rec.errors and snap is not None and not snap.stale
            and snap.missing <= usual_missing)


def scale_down(rec: TickRecord) -> bool:
    return (rec.actuated and rec.current_replicas is not None
            and rec.decision.replicas < rec.current_replicas)


def score(faults: Sequence[FaultRecord], ticks: Sequence[tuple[float, TickRecord]],
          requests: Sequence[tuple] | None, run_start_s: float = 0.0) -> list[FaultRow]:
    """The table: a baseline row (before the first fault), then one row per fault.

    ``requests`` are (end time, outcome[, latency s]) in the same time base; each lands in the row whose
    slot holds its end (None: a phase without a data path). A scale-down is wrong when its
    tick was not healthy, or came after the fault began and before the loop had recovered.
    """
    first_s = faults[0].start_s if faults else math.inf
    usual = baseline_missing(ticks, first_s)
    slots = [(BASELINE, "", run_start_s, first_s, None)] + [
        (f.name, f.actuator, f.start_s, f.slot_end_s, f) for f in faults]
    rows = []
    for name, actuator, lo_s, hi_s, fault in slots:
        in_slot = [(t, r) for t, r in ticks if lo_s <= t < hi_s]
        recovered_s = None
        if fault is not None:
            ready_s = max(fault.end_s, fault.healed_s or -math.inf)
            recovered_s = next((t for t, r in in_slot if t >= ready_s and healthy(r, usual)),
                               None)
        guard_hi_s = recovered_s if recovered_s is not None else hi_s
        downs = [(t, r) for t, r in in_slot if scale_down(r)]
        wrong = [1 for t, r in downs if not healthy(r, usual) or (
            fault is not None and t < guard_hi_s)]
        counts: dict[str, int] | None = None
        lost_at = []
        if requests is not None:
            counts = {}
            for end_s, outcome, *latency in requests:
                if lo_s <= end_s < hi_s:
                    counts[outcome] = counts.get(outcome, 0) + 1
                    if outcome == LOST:
                        lost_at.append(f"+{end_s - lo_s:.1f}s"
                                       + (f" after {latency[0]:.2f}s" if latency else ""))
        rows.append(FaultRow(
            fault=name, actuator=actuator or "-",
            at_s=None if fault is None else round(fault.start_s, 1),
            fault_s=None if fault is None else round(fault.end_s - fault.start_s, 1),
            scale_downs=len(downs), wrong_scale_downs=len(wrong),
            error_answers=None if counts is None else sum(
                counts.get(k, 0) for k in (ERROR, SHED, TIMEOUT)),
            refused=None if counts is None else counts.get(REFUSED, 0),
            lost=None if counts is None else counts.get(LOST, 0),
            recover_s=None if recovered_s is None else round(
                recovered_s - max(fault.end_s, fault.healed_s or -math.inf), 1),
            ticks=len(in_slot), unhealthy_ticks=sum(not healthy(r, usual) for _, r in in_slot),
            note=fault.note if fault else "",
            downs=[f"+{t - lo_s:.1f}s {r.current_replicas}->{r.decision.replicas}"
                   f" {r.decision.reason}" for t, r in downs], lost_at=lost_at))
    return rows


def request_ends(request_log: Any, offset_s: float) -> list[tuple[float, str, float]]:
    """(end time in the controller's time base, outcome, latency s) of every request sent."""
    with request_log.lock:
        rows = list(zip(request_log.sent_s, request_log.latency_s, request_log.outcome))
    return [(offset_s + s + (0.0 if math.isnan(lat) else lat), o, lat) for s, lat, o in rows]


# -- the load, telling "no answer" apart -----------------------------------------------------
class SoakLoad(LoadGenerator):
    """The live load generator, with requests that got no answer split off from error answers:
    ``refused`` (the connection failed: the server never saw the request) and ``lost``."""

    async def _one(self, session: Any, at_s: float, i: int) -> None:
        import aiohttp

        begin_s = wall_clock.now_s()
        try:
            async with session.post(self.url, json={"seed": i}) as resp:
                await resp.read()
                outcome = (OK if resp.status < 400 else SHED if resp.status in (429, 503)
                           else TIMEOUT if resp.status == 504 else ERROR)
        except aiohttp.ClientConnectorError:
            outcome = REFUSED
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
            outcome = LOST
        self.log.add(at_s, wall_clock.now_s() - begin_s, outcome)


# -- the Ray phase's faults ------------------------------------------------------------------
class NanInjector:
    """While ``active``, Prometheus's answers to the in-flight query come back NaN (its own
    spelling, as a broken exporter makes it), at the source's HTTP-answer boundary."""

    def __init__(self, source: Any, needle: str = f"avg_over_time({n.IN_FLIGHT}") -> None:
        self.active = threading.Event()
        self.needle = needle
        self._inner = source._query
        source._query = self._query

    def _query(self, promql: str, at_s: float) -> list[dict]:
        result = self._inner(promql, at_s)
        if self.active.is_set() and self.needle in promql:
            return [{**item, "value": [item["value"][0], "NaN"]} for item in result]
        return result


def _proxy_pid() -> int:
    """The pid of Ray Serve's HTTP proxy actor (the sidecar's upstream), asked of the actor."""
    import ray
    from ray.serve.context import _get_global_client

    proxies = (_get_global_client().get_serve_details().get("proxies") or {}).values()
    names = [p["actor_name"] for p in proxies if p.get("actor_name")]
    if not names:
        raise RuntimeError("no Ray Serve proxy in Serve's details")
    handle = ray.get_actor(names[0], namespace="serve")
    return int(ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=30))


class Injector:
    """Runs the schedule in a thread; each fault's record lands in ``faults``."""

    def __init__(self, cfg: SoakConfig, parts: Any) -> None:
        self.cfg = cfg
        self.parts = parts
        self.nan = NanInjector(parts.source)
        self.faults: list[FaultRecord] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._stopped_pid: int | None = None
        self._thread = threading.Thread(target=self._run, name="trimtab-soak", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the schedule and undo a fault in progress (a stopped proxy is resumed)."""
        self.stop.set()
        self._thread.join(self.cfg.fault_s + 60)
        self.nan.active.clear()
        if self._stopped_pid is not None:
            _signal(self._stopped_pid, signal.SIGCONT)

    def _run(self) -> None:
        start_s = self.parts.clock_s()
        for i, name in enumerate(self.cfg.faults):
            at_s = start_s + self.cfg.settle_s + i * self.cfg.slot_s()
            while not self.stop.is_set() and self.parts.clock_s() < at_s:
                wall_clock.sleep_s(0.2)
            if self.stop.is_set():
                return
            begin_s = self.parts.clock_s()
            try:
                end_s, healed_s, note = getattr(self, "_" + name)()
            except Exception as exc:   # reported in the table, the soak goes on
                log.warning("fault %s: %s", name, exc)
                self.errors.append(f"{name}: {exc}")
                end_s, healed_s, note = self.parts.clock_s(), None, f"injection failed: {exc}"
            self.faults.append(FaultRecord(name, self._actuator(name), begin_s, end_s,
                                           at_s + self.cfg.slot_s(), healed_s, note))

    @staticmethod
    def _actuator(name: str) -> str:
        return "ray_serve+sidecar"

    def _wait(self, duration_s: float) -> None:
        self.stop.wait(duration_s)

    def _prometheus_kill(self) -> tuple[float, None, str]:
        prom = self.parts.prom
        prom.proc.kill()
        prom.proc.wait(10)
        self._wait(self.cfg.fault_s)
        prom.start(timeout_s=60.0)          # same port, same TSDB (its WAL replayed)
        return self.parts.clock_s(), None, "SIGKILL, down fault_s, restarted on its TSDB"

    def _sidecar(self, sig: int, what: str) -> tuple[float, None, str]:
        sidecar = self.parts.sidecar
        sidecar.proc.send_signal(sig)
        sidecar.proc.wait(15)
        sidecar.start(timeout_s=60.0)       # restarted at once, as a supervisor would
        return self.parts.clock_s(), None, what

    def _sidecar_kill(self) -> tuple[float, None, str]:
        return self._sidecar(signal.SIGTERM, "SIGTERM (drains 2 s), restarted at once")

    def _sidecar_crash(self) -> tuple[float, None, str]:
        return self._sidecar(signal.SIGKILL, "SIGKILL, restarted at once")

    def _replica_kill(self) -> tuple[float, float | None, str]:
        from trimtab.controllers.shell.actuators.ray_serve import serving_replicas

        act, wl = self.parts.actuator.inner, self.parts.fleet.workload
        details = act.deployment_details(wl)
        before = serving_replicas(details)
        victim = next(r for r in details["replicas"] if r["replica_id"] in before)
        _signal(int(victim["pid"]), signal.SIGKILL)
        end_s = self.parts.clock_s()
        healed = wall_clock.poll_until(lambda: self._replaced(victim["replica_id"], len(before)),
                                       timeout_s=self.cfg.slot_s() - self.cfg.interval_s,
                                       step_s=0.5)
        return end_s, (self.parts.clock_s() if healed else None), (
            f"SIGKILL 1 of {len(before)} replicas"
            + ("" if healed else "; not replaced within the slot"))

    def _replaced(self, victim: str, count: int) -> bool:
        from trimtab.controllers.shell.actuators.ray_serve import serving_replicas

        try:
            now = serving_replicas(self.parts.actuator.inner.deployment_details(
                self.parts.fleet.workload))
        except Exception:   # Ray busy replacing it: ask again
            return False
        return victim not in now and len(now) >= count

    def _upstream_hang(self) -> tuple[float, None, str]:
        pid = _proxy_pid()
        self._stopped_pid = pid
        _signal(pid, signal.SIGSTOP)
        try:
            self._wait(self.cfg.fault_s)
        finally:
            _signal(pid, signal.SIGCONT)
            self._stopped_pid = None
        return self.parts.clock_s(), None, "Ray Serve's HTTP proxy SIGSTOPped fault_s"

    def _metric_nan(self) -> tuple[float, None, str]:
        self.nan.active.set()
        try:
            self._wait(self.cfg.fault_s)
        finally:
            self.nan.active.clear()
        return self.parts.clock_s(), None, f"{n.IN_FLIGHT} answered NaN fault_s"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# -- the phases ------------------------------------------------------------------------------
@dataclass
class PhaseResult:
    rows: list[FaultRow]
    faults: list[FaultRecord] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def live_config(cfg: SoakConfig) -> Any:
    """The ``trimtab up`` settings of a soak: steady load (no surge), the soak's pace."""
    from trimtab.up.run import LiveConfig

    return LiveConfig(duration_s=cfg.duration_s, base_rps=cfg.base_rps, surge_factor=1.0,
                      interval_s=cfg.interval_s, seed=cfg.seed, settle_s=cfg.interval_s)


def ray_phase(cfg: SoakConfig, run_live_with: Callable[..., Any] | None = None,
              on_progress: Callable[[dict], None] | None = None) -> PhaseResult:
    """The whole ``trimtab up`` loop (Ray Serve, sidecar, Prometheus, controller) under steady
    load, the faults of ``cfg.faults`` injected on the schedule."""
    if run_live_with is None:
        from trimtab.up.run import run_live_with
    holder: dict[str, Injector] = {}

    def started(parts: Any) -> None:
        holder["injector"] = Injector(cfg, parts)
        holder["injector"].start()

    def finish(run: Any) -> PhaseResult:
        injector = holder["injector"]
        injector.close()
        requests = request_ends(run.request_log, run.load_offset_s)
        end_s = max([t for t, _ in run.ticks] + [0.0]) + 1.0
        faults = list(injector.faults)
        if faults:
            faults[-1].slot_end_s = min(faults[-1].slot_end_s, end_s)
        counts: dict[str, int] = {}
        for _, outcome, _latency_s in requests:
            counts[outcome] = counts.get(outcome, 0) + 1
        return PhaseResult(score(faults, run.ticks, requests), faults, counts, injector.errors)

    return run_live_with(live_config(cfg), finish, on_progress=on_progress, on_started=started,
                         load_factory=SoakLoad)


def rows_json(rows: Sequence[FaultRow]) -> list[dict]:
    return [asdict(r) for r in rows]


def table(rows: Sequence[FaultRow], title: str = "fault soak") -> Any:
    """The rich table of the rows."""
    from rich.table import Table

    t = Table(title=title)
    cols = ("fault", "actuator", "at_s", "fault_s", "scale_downs", "wrong_scale_downs",
            "error_answers", "refused", "lost", "recover_s", "ticks", "unhealthy_ticks", "note")
    for c in cols:
        t.add_column(c, justify="left" if c in ("fault", "actuator", "note") else "right")
    for r in rows:
        t.add_row(*("-" if getattr(r, c) is None else str(getattr(r, c)) for c in cols))
    return t


def verdict(rows: Sequence[FaultRow]) -> list[str]:
    """What failed the soak's targets: a wrong scale-down, a lost request, no recovery."""
    bad = []
    for r in rows:
        if r.wrong_scale_downs:
            bad.append(f"{r.fault}: {r.wrong_scale_downs} wrong scale-down(s)")
        if r.lost:
            bad.append(f"{r.fault}: {r.lost} request(s) lost without an answer")
        if r.fault != BASELINE and r.recover_s is None:
            bad.append(f"{r.fault}: not recovered within its slot")
    return bad


def soak_main(duration_s: float | None, base_rps: float | None, faults: str | None,
              fault_s: float, seed: int, kubeconfig: Any, json_path: Any) -> int:
    """``trimtab up --soak``: run the phases, print the tables, write the JSON; 0 when the
    targets hold (no wrong scale-down, nothing lost, every fault recovered), 1 if not, 2 on
    bad settings."""
    import json

    from pydantic import ValidationError
    from rich.console import Console

    from trimtab.common.errors import message

    params: dict[str, Any] = {"fault_s": fault_s, "seed": seed}
    if duration_s is not None:
        params["duration_s"] = duration_s
    if base_rps is not None:
        params["base_rps"] = base_rps
    if faults is not None:
        params["faults"] = tuple(f.strip() for f in faults.split(",") if f.strip())
    console = Console(stderr=True)
    try:
        cfg = SoakConfig(**params)
    except ValidationError as exc:
        console.print(f"error: {message(exc, top='soak', first_only=True)}")
        return 2
    if kubeconfig is not None and not kubeconfig.is_file():
        console.print(f"error: --kubeconfig {kubeconfig}: no such file")
        return 2
    logging.basicConfig(level=logging.WARNING)
    phases = {"ray": ray_phase(cfg, on_progress=lambda i: _stage(console, i))}
    if kubeconfig is not None:
        from trimtab.up.soak_kube import kube_phase

        console.print("trimtab up --soak: the Kubernetes phase")
        phases["kubernetes"] = kube_phase(str(kubeconfig))
    out = Console()
    if not out.is_terminal:
        out = Console(width=200)     # a log file: the table unwrapped
    bad = []
    for name, res in phases.items():
        out.print(table(res.rows, f"fault soak, {name} phase"))
        out.print(f"requests by outcome: {res.requests}")
        bad += verdict(res.rows) + [f"injection: {e}" for e in res.errors]
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({
            "config": cfg.model_dump(), "verdict": bad,
            "phases": {k: {"rows": rows_json(v.rows), "requests": v.requests,
                           "errors": v.errors} for k, v in phases.items()}}, indent=2) + "\n")
    for line in bad:
        out.print(f"FAILED {line}")
    return 1 if bad else 0


def _stage(console: Any, info: dict) -> None:
    if info.get("stage") != "load":
        console.print(f"trimtab up --soak: {info['stage']}")
