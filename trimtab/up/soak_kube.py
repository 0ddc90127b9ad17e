"""The fault soak's Kubernetes phase: a real API server answering 409, 429 and 500 in turn.

The faults are injected at the HTTP layer of the official client (its urllib3 pool answers
the status itself, so the client raises what it raises for a real one): 409 on every write
of the scale subresource (someone else keeps writing), 429 and 500 on every call. The loop is
the production one (ControlLoop, the safety stages, the Kubernetes actuator) steering a
Deployment on the real API server; there are no pods serving, so the demand is scripted: a
square wave asking for ``high`` then ``low`` replicas, so writes up and down happen all along.
"""
from __future__ import annotations

import io
import json
import math
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trimtab.controllers.core.types import Decision, FleetBounds, LatencyHistogram, Snapshot
from trimtab.controllers.shell.actuators.base import WorkloadRef
from trimtab.controllers.shell.clock import WallClock
from trimtab.controllers.shell.loop import ControlLoop, Target, TickRecord
from trimtab.controllers.shell.sources.base import TargetSelector
from trimtab.up import wall_clock
from trimtab.up.soak import KUBE_FAULTS, FaultRecord, PhaseResult, score

STATUS = {"kube_409": 409, "kube_429": 429, "kube_500": 500}
REASONS = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError"}


class KubeSoakConfig(BaseModel):
    """The Kubernetes phase's schedule and pace."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: float = Field(1.0, gt=0, le=30)
    settle_s: float = Field(6.0, ge=0)
    fault_s: float = Field(6.0, gt=0, le=60)
    slot_s: float = Field(20.0, gt=0)
    period_ticks: int = Field(4, ge=2)        # of the square wave of demand
    high: int = Field(5, ge=2, le=8)
    low: int = Field(2, ge=1, le=8)
    rps_per_replica: float = 10.0
    faults: tuple[str, ...] = KUBE_FAULTS


class FaultyPool:
    """Wraps the client's urllib3 pool: while ``status`` is set, matching calls get it back."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.status: int | None = None
        self.writes_only = False
        self.injected = 0
        self.lock = threading.Lock()

    def request(self, method: str, url: str, *args: Any, **kw: Any) -> Any:
        import urllib3

        status = self.status
        if status is not None and (not self.writes_only or (method in ("PUT", "PATCH")
                                                              and url.endswith("/scale"))):
            with self.lock:
                self.injected += 1
            body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": REASONS[status], "code": status,
                               "message": "injected by the fault soak"}).encode()
            return urllib3.HTTPResponse(body=io.BytesIO(body), status=status,
                                        reason=REASONS[status], preload_content=False,
                                        headers={"Content-Type": "application/json"})
        return self.inner.request(method, url, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class SquareWave:
    """Scripted fresh data: arrivals asking for ``high`` then ``low`` replicas, by turns."""

    name = "scripted"

    def __init__(self, cfg: KubeSoakConfig, key: str, start_s: float) -> None:
        self.cfg, self.key, self.start_s = cfg, key, start_s
        self.last_errors: list[str] = []
        self.last_causes: list[str] = []

    def wanted(self, now_s: float) -> int:
        tick = int((now_s - self.start_s) / self.cfg.interval_s)
        return self.cfg.high if (tick // self.cfg.period_ticks) % 2 == 0 else self.cfg.low

    def read(self, targets: Any, now_s: float, window_s: float) -> dict[str, Snapshot]:
        rps = self.wanted(now_s) * self.cfg.rps_per_replica
        return {self.key: Snapshot(
            time_s=now_s, window_s=window_s, arrival_rate_rps=rps, completion_rate_rps=rps,
            queue_depth=0.0, in_flight=1.0, ready_replicas=self.cfg.low,
            latency=LatencyHistogram(bounds_s=(0.1, 1.0), counts=(1, 0, 0)), shed_rps=0.0,
            timed_out_rps=0.0, missing=frozenset(), stale=frozenset())}


@dataclass(frozen=True)
class FollowPolicy:
    """Replicas for the arrival rate at ``rps_per_replica`` each (the phase's policy)."""

    rps_per_replica: float
    name: str = "follow"

    def initial_state(self) -> None:
        return None

    def decide(self, snap: Snapshot, state: None, now_s: float) -> tuple[Decision, None]:
        rps = snap.arrival_rate_rps or 0.0
        return Decision(max(1, math.ceil(rps / self.rps_per_replica - 1e-9)), "follow"), state


def kube_phase(kubeconfig: str, cfg: KubeSoakConfig | None = None) -> PhaseResult:
    """Create a namespace and a Deployment, steer it through the faults, delete the namespace."""
    from kubernetes import client

    from trimtab.controllers.shell.actuators.kubernetes import KubernetesActuator, make_api_client

    cfg = cfg or KubeSoakConfig()
    admin = make_api_client(kubeconfig)
    faulty = make_api_client(kubeconfig)
    pool = FaultyPool(faulty.rest_client.pool_manager)
    faulty.rest_client.pool_manager = pool
    ns = f"trimtab-soak-{uuid.uuid4().hex[:6]}"
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        apps.create_namespaced_deployment(ns, _deployment("model", cfg.low))
        return _steer(cfg, pool, KubernetesActuator(faulty, instance="trimtab-soak"),
                      WorkloadRef("Deployment", ns, "model"))
    finally:
        core.delete_namespace(ns)
        admin.close()
        faulty.close()


def _steer(cfg: KubeSoakConfig, pool: FaultyPool, actuator: Any,
           workload: WorkloadRef) -> PhaseResult:
    clock = WallClock()
    t0 = clock.now_s()
    key = f"{workload.namespace}/{workload.name}"
    source = SquareWave(cfg, key, t0)
    bounds = FleetBounds(min_replicas=1, max_replicas=8, initial_replicas=cfg.low)
    ticks: list[tuple[float, TickRecord]] = []
    loop = ControlLoop([Target(workload, TargetSelector(key, {"model": workload.name}),
                               FollowPolicy(cfg.rps_per_replica), bounds=bounds, warmup_s=0.0)],
                       source, [actuator], clock, interval_s=cfg.interval_s,
                       window_s=cfg.interval_s,
                       on_tick=lambda recs: ticks.extend((clock.now_s() - t0, r) for r in recs))
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), name="trimtab-soak-kube",
                              daemon=True)
    thread.start()
    faults: list[FaultRecord] = []
    try:
        for i, name in enumerate(cfg.faults):
            at_s = cfg.settle_s + i * cfg.slot_s
            wall_clock.sleep_s(max(0.0, at_s - (clock.now_s() - t0)))
            pool.writes_only = STATUS[name] == 409
            pool.status = STATUS[name]
            begin_s = clock.now_s() - t0
            wall_clock.sleep_s(cfg.fault_s)
            pool.status = None
            end_s = clock.now_s() - t0
            faults.append(FaultRecord(
                name, "kubernetes (real kube-apiserver)", begin_s, end_s, at_s + cfg.slot_s,
                note=("every PUT .../scale" if pool.writes_only else "every call")
                + f" answered {STATUS[name]} for fault_s"))
        wall_clock.sleep_s(max(0.0, cfg.settle_s + len(cfg.faults) * cfg.slot_s
                               - (clock.now_s() - t0)))
    finally:
        pool.status = None
        stop.set()
        thread.join(30)
    return PhaseResult(score(faults, ticks, None), faults,
                       {"injected_answers": pool.injected})


def _deployment(name: str, replicas: int) -> Any:
    from kubernetes import client

    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="m", image="trimtab-soak/model:0")]))))

