"""``trimtab up``: Ray Serve + the sidecar + Prometheus + the controller under a real load ramp.

Everything is started in order on an ExitStack and stopped in reverse, on success, on error
and on Ctrl-C (SIGTERM is turned into KeyboardInterrupt so it unwinds the same way; both are
also remembered, in case a library call swallowed the exception).
"""
from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from prometheus_client import Gauge
from pydantic import BaseModel, ConfigDict, Field, model_validator

from trimtab.up import wall_clock
from trimtab.collectors import names
from trimtab.controllers.shell.actuators.base import ActuationError
from trimtab.controllers.shell.actuators.gate import GateActuator
from trimtab.controllers.shell.actuators.ray_serve import (RayServeActuator, replica_counts,
                                                           serving_replicas)
from trimtab.controllers.shell.actuators.sidecar import SidecarControlClient
from trimtab.controllers.shell.clock import WallClock
from trimtab.controllers.shell.loop import ControlLoop, Target, TickRecord
from trimtab.controllers.shell.metrics import ControllerMetrics
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.shell.sources.base import TargetSelector
from trimtab.controllers.shell.sources.prometheus import PrometheusSource
from trimtab.controllers.shell.sources.ray_serve import RayReplicaSource
from trimtab.controllers.core.types import FleetBounds
from trimtab.up.fleet import DEPLOYMENT_NAME, FleetConfig, RayFleet, require_ray
from trimtab.up.load import LoadGenerator, RampProfile, arrivals
from trimtab.up.prom import live_prometheus
from trimtab.common.ports import free_port
from trimtab.common.process import stop_process, wait_http_ok
from trimtab.common.prometheus import find_binary
from trimtab.common.slo import SLO_TARGET, SloTarget
from trimtab.up.recording import RecordingActuator

log = logging.getLogger("trimtab.live")
FLEET_MAX_ONGOING = 16       # max_ongoing_requests per replica until the policy sets it


class LiveConfig(BaseModel):
    """Settings of one live run; errors name the field, the value and the rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duration_s: float = Field(180.0, ge=30, le=3600)
    base_rps: float = Field(3.0, gt=0, le=40)
    surge_factor: float = Field(5.0, ge=1, le=8)
    surge_start: float = Field(0.25, ge=0, lt=1)   # fractions of duration_s (RampProfile)
    surge_end: float = Field(0.55, gt=0, le=1)
    seed: int = 0
    slo_latency_s: float = Field(1.0, gt=0)
    slo_target: SloTarget = SLO_TARGET
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(4, ge=1, le=8)
    initial_max_batch_size: int = Field(2, ge=1)
    max_batch_size: int = Field(16, ge=1, le=64)
    batch_timeout_ms: float = Field(5.0, ge=0)
    base_ms: float = Field(40.0, ge=0)
    per_item_ms: float = Field(60.0, ge=0)
    interval_s: float = Field(3.0, gt=0)
    window_s: float = Field(5.0, gt=0)
    cold_start_s: float = Field(3.0, gt=0)
    policy: str = ("trimtab:bucket_s=5,season_s=86400,refit_s=60,down_window_s=15,"
                   "warmup_s=15,min_step=2")
    settle_s: float = Field(5.0, ge=0)
    ray_num_cpus: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "LiveConfig":
        self.profile()    # the ramp's own checks (surge_start + ramp <= surge_end ...)
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas = {self.min_replicas} must be <= max_replicas ="
                             f" {self.max_replicas}")
        return self

    def bounds(self) -> FleetBounds:
        return FleetBounds(min_replicas=self.min_replicas, max_replicas=self.max_replicas,
                           cold_start_s=self.cold_start_s, slo_latency_s=self.slo_latency_s,
                           slo_target=self.slo_target, initial_replicas=self.min_replicas,
                           max_batch_size=self.max_batch_size,
                           batch_timeout_ms=self.batch_timeout_ms)

    def profile(self) -> RampProfile:
        return RampProfile(self.duration_s, self.base_rps, self.surge_factor,
                           self.surge_start, self.surge_end)


@dataclass
class LiveRun:
    """What a finished run hands to the results and fidelity code."""

    config: LiveConfig
    prom_url: str
    load_start_unix_s: float
    load_end_unix_s: float
    arrival_s: object                       # numpy array, offsets from the load start
    request_log: object                     # load.RequestLog
    applied: list = field(default_factory=list)   # recording.AppliedRecord
    actuation_errors: list = field(default_factory=list)
    ticks: list[tuple[float, TickRecord]] = field(default_factory=list)
    batch_size_changes: int = 0
    replica_samples: list[tuple[float, int, int]] = field(default_factory=list)
    actor_ids: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    # Seconds from the controller's clock zero (``applied``/``ticks`` times) to the load's
    # start (``arrival_s``/``replica_samples`` times): the fidelity replay aligns them.
    load_offset_s: float = 0.0


@dataclass
class LiveParts:
    """The running pieces, handed to ``on_started`` (the fault soak kills and restarts them)."""

    fleet: RayFleet
    sidecar: "Sidecar"
    prom: object                            # common.prometheus.PrometheusServer
    source: PrometheusSource
    actuator: RecordingActuator
    load: LoadGenerator
    clock_s: Callable[[], float]            # the controller's time base (``ticks``, ``applied``)
    ticks: list[tuple[float, TickRecord]]


class Sidecar:
    """``trimtab sidecar --proxy`` as a subprocess in front of Ray Serve's HTTP proxy."""

    def __init__(self, upstream: str, listen_port: int, metrics_port: int, model: str,
                 slo_latency_s: float, work_dir: Path, concurrency_limit: int) -> None:
        token = work_dir / "control.token"
        self.token = secrets.token_hex(16)
        token.write_text(self.token)
        token.chmod(0o600)
        self.url = f"http://127.0.0.1:{listen_port}/"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}"
        self.log_path = work_dir / "sidecar.log"
        self.cmd = [sys.executable, "-m", "trimtab.cli", "sidecar", "--proxy",
                    "--upstream", upstream.rstrip("/"), "--listen", f"127.0.0.1:{listen_port}",
                    "--metrics-port", str(metrics_port), "--model", model,
                    "--slo-latency-s", str(slo_latency_s), "--gpu", "off",
                    "--control-token-file", str(token), "--concurrency-limit", str(concurrency_limit),
                    "--max-queue-length", "2048", "--queue-timeout-s", "30",
                    "--upstream-timeout-s", "30", "--log-level", "warning"]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30.0) -> "Sidecar":
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
        wait_http_ok(self.metrics_url + "/healthz", self.proc, timeout_s, self.log_path, "sidecar")
        return self

    def stop(self) -> None:
        stop_process(self.proc)


def wait_serving(url: str, timeout_s: float = 30.0) -> None:
    """Until one request goes through the sidecar and Ray Serve to the model."""
    deadline_s = wall_clock.now_s() + timeout_s
    last = ""
    while wall_clock.now_s() < deadline_s:
        try:
            req = urllib.request.Request(url, data=b'{"seed": 0}',
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        wall_clock.sleep_s(0.3)
    raise TimeoutError(f"no answer through {url} after {timeout_s} s: {last}")


INTERRUPTED = threading.Event()


def interrupt_on_signal(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM: raise KeyboardInterrupt, and remember it, since a library call
    that was running in the main thread may swallow the exception (seen once in CI: a run
    went on to its end after Ctrl-C); the load loop checks the flag every second."""
    INTERRUPTED.set()
    raise KeyboardInterrupt


def run_live_with(cfg: LiveConfig, finish: Callable[[LiveRun], object],
                  work_dir: Path | None = None,
                  on_progress: Callable[[dict], None] | None = None, *,
                  on_started: Callable[[LiveParts], None] | None = None,
                  load_factory: Callable[..., LoadGenerator] = LoadGenerator) -> object:
    """Start everything, drive the load, call ``finish(run)`` while Prometheus still runs,
    then stop everything (also on error and Ctrl-C); returns what ``finish`` returned.
    ``on_started(parts)`` is called once the load runs; ``load_factory`` builds the load."""
    require_ray()
    if find_binary("prometheus") is None:
        raise RuntimeError("prometheus not found: install the Debian package 'prometheus'"
                           " (make live-demo does)")
    old_handlers = {}
    INTERRUPTED.clear()
    if threading.current_thread() is threading.main_thread():
        old_handlers = {sig: signal.signal(sig, interrupt_on_signal)
                        for sig in (signal.SIGTERM, signal.SIGINT)}
    with ExitStack() as stack:
        for sig, handler in old_handlers.items():
            stack.callback(signal.signal, sig, handler)
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trimtab-up-")))
        work_dir.mkdir(parents=True, exist_ok=True)
        ports = {k: free_port() for k in ("ray_http", "ray_metrics", "sidecar", "sidecar_admin",
                                           "controller", "prometheus")}
        _progress(on_progress, stage="starting Ray Serve")
        fleet = RayFleet(FleetConfig(
            http_port=ports["ray_http"], metrics_port=ports["ray_metrics"],
            num_cpus=cfg.ray_num_cpus, replicas=cfg.min_replicas,
            max_batch_size=cfg.initial_max_batch_size,
            batch_wait_timeout_s=cfg.batch_timeout_ms / 1000.0, base_ms=cfg.base_ms,
            per_item_ms=cfg.per_item_ms))
        stack.callback(fleet.stop)
        fleet.start()
        _progress(on_progress, stage="starting the sidecar")
        sidecar = Sidecar(fleet.url, ports["sidecar"], ports["sidecar_admin"], DEPLOYMENT_NAME,
                          cfg.slo_latency_s, work_dir,
                          concurrency_limit=cfg.min_replicas * FLEET_MAX_ONGOING)
        stack.callback(sidecar.stop)
        sidecar.start()
        wait_serving(sidecar.url)

        from prometheus_client import start_http_server

        metrics = ControllerMetrics()
        live_replicas = Gauge(names.LIVE_REPLICAS, names.BY_NAME[names.LIVE_REPLICAS].help,
                              ["state"], registry=metrics.registry)
        server, _thread = start_http_server(ports["controller"], addr="127.0.0.1",
                                            registry=metrics.registry)
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        _progress(on_progress, stage="starting Prometheus")
        prom = live_prometheus(work_dir / "prometheus", ports["prometheus"],
                               ports["sidecar_admin"], ports["controller"], ports["ray_metrics"])
        stack.callback(prom.stop)
        prom.start(timeout_s=30.0)

        t0 = wall_clock.now_s()
        actuator = RecordingActuator(RayServeActuator(), lambda: wall_clock.now_s() - t0)
        prom_source = PrometheusSource(prom.url, staleness_s=30.0)
        source = RayReplicaSource(prom_source,
                                  actuator.inner, {"demo/mlp": fleet.workload})
        bounds = cfg.bounds()
        policy = make_policy(cfg.policy, bounds, cfg.interval_s)
        ticks: list[tuple[float, TickRecord]] = []
        gate = GateActuator(SidecarControlClient(sidecar.metrics_url, sidecar.token),
                            actuator.inner)
        loop = ControlLoop(
            [Target(fleet.workload, TargetSelector("demo/mlp", {"model": DEPLOYMENT_NAME}),
                    policy, model=DEPLOYMENT_NAME, bounds=bounds, warmup_s=cfg.window_s)],
            source, [actuator, gate],
            WallClock(), metrics, interval_s=cfg.interval_s,
            window_s=cfg.window_s,
            on_tick=lambda recs: ticks.extend((wall_clock.now_s() - t0, r) for r in recs))
        stop = threading.Event()
        controller = threading.Thread(target=loop.run, args=(stop,), name="trimtab-controller",
                                      daemon=True)
        controller.start()
        stack.callback(controller.join, 30)
        stack.callback(stop.set)

        arrival_s = arrivals(cfg.profile(), cfg.seed)
        load = load_factory(sidecar.url, arrival_s, timeout_s=30.0)
        replica_samples: list[tuple[float, int, int]] = []
        actor_ids: list[tuple[float, dict[str, str]]] = []
        load_start_unix_s = wall_clock.unix_s()
        load.start()
        stack.callback(load.stop)
        if on_started is not None:
            on_started(LiveParts(fleet, sidecar, prom, prom_source, actuator, load,
                                 lambda: wall_clock.now_s() - t0, ticks))
        settle_until_s: float | None = None
        while settle_until_s is None or wall_clock.now_s() < settle_until_s:
            wall_clock.sleep_s(1.0)
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt
            try:
                details = actuator.inner.deployment_details(fleet.workload)
            except ActuationError as exc:
                log.warning("reading Ray Serve replicas: %s", exc)
            else:
                running, starting = replica_counts(details)
                live_replicas.labels("running").set(running)
                live_replicas.labels("starting").set(starting)
                replica_samples.append((load.elapsed_s(), running, starting))
                actor_ids.append((load.elapsed_s(), serving_replicas(details)))
            _progress(on_progress, stage="load", elapsed_s=load.elapsed_s(), load=load,
                      snapshot=source.last.get("demo/mlp"), ticks=ticks, actuator=actuator,
                      config=cfg, profile=cfg.profile(), replicas=replica_samples[-1:])
            if settle_until_s is None and load.done():
                settle_until_s = wall_clock.now_s() + cfg.settle_s
        load_end_unix_s = load_start_unix_s + cfg.duration_s
        load_offset_s = (load.started_mono_s or t0) - t0
        stop.set()
        controller.join(30)
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt
        _progress(on_progress, stage="reading results from Prometheus")
        run = LiveRun(config=cfg, prom_url=prom.url, load_start_unix_s=load_start_unix_s,
                      load_end_unix_s=load_end_unix_s, arrival_s=arrival_s,
                      request_log=load.log, applied=list(actuator.history),
                      actuation_errors=list(actuator.errors), ticks=list(ticks),
                      batch_size_changes=actuator.batch_size_changes(),
                      replica_samples=replica_samples, actor_ids=actor_ids,
                      load_offset_s=load_offset_s)
        result = finish(run)
        _progress(on_progress, stage="stopping")
        return result


def _progress(cb: Callable[[dict], None] | None, **info: object) -> None:
    if cb is not None:
        cb(info)
