"""Fixtures for the production controller tests: the Kubernetes stand-in, a real Prometheus, exporters."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from trimtab.collectors import names as n
from trimtab.common.prometheus import PromClient, PrometheusServer
from tests.support.kube_standin import KubeStandIn
from trimtab.controllers.core.types import Decision, FleetBounds, Snapshot
from tests.conftest import free_port, require_binary


@pytest.fixture
def standin() -> Iterator[KubeStandIn]:
    s = KubeStandIn().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def kube_api(standin: KubeStandIn, tmp_path: Path):
    from trimtab.controllers.shell.actuators.kubernetes import make_api_client

    api = make_api_client(str(standin.write_kubeconfig(tmp_path / "kubeconfig")))
    yield api
    api.close()


# -- a sidecar-shaped exporter (prometheus_client, the same names the sidecar exports) -------
class Exporter:
    """The series one sidecar exports for one model, served on a free loopback port."""

    def __init__(self, model: str = "llama") -> None:
        self.model = model
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(n.REQUESTS, "x", ["model", "outcome"], registry=r)
        self.duration = Histogram(n.REQUEST_DURATION, "x", ["model"], registry=r,
                                  buckets=n.DEFAULT_LATENCY_BUCKETS_S)
        self.queue = Gauge(n.QUEUE_DEPTH, "x", ["model"], registry=r)
        self.in_flight = Gauge(n.IN_FLIGHT, "x", ["model"], registry=r)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, "127.0.0.1", registry=r)

    def serve_requests(self, count: int, latency_s: float = 0.05) -> None:
        for _ in range(count):
            self.requests.labels(self.model, "ok").inc()
            self.duration.labels(self.model).observe(latency_s)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Prometheus:
    """A real Prometheus (Debian package) on loopback, scraping static targets every second."""

    workdir: Path
    targets: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    port: int = 0
    server: PrometheusServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Prometheus":
        self.port = self.port or free_port()
        cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
               "scrape_configs": [{"job_name": "sidecars", "scrape_interval": "1s",
                                   "scrape_timeout": "900ms", "static_configs": [
                                       {"targets": [f"127.0.0.1:{p}"], "labels": labels}
                                       for p, labels in self.targets]}]}
        self.server = PrometheusServer(self.workdir, cfg, port=self.port,
                                       binary=require_binary("prometheus")).start(timeout_s=30)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def wait_for(self, promql: str, timeout_s: float = 20.0) -> None:
        client = PromClient(self.url, timeout_s=2)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if client.instant(promql):
                return
            time.sleep(0.3)
        raise AssertionError(f"no result for {promql} within {timeout_s} s")


# -- builders for loop tests ----------------------------------------------------------------
def snapshot(**kw: Any) -> Snapshot:
    base: dict[str, Any] = dict(time_s=0.0, window_s=60.0, arrival_rate_rps=10.0, queue_depth=0.0,
                                in_flight=2.0, ready_replicas=4)
    base.update(kw)
    return Snapshot(**base)


@dataclass
class ScriptedPolicy:
    """A test policy: wants ``replicas`` (settable), records every snapshot it saw."""

    replicas: int = 2
    name: str = "scripted"
    interval_s: float = 15.0
    params: dict = field(default_factory=dict)
    seen: list = field(default_factory=list)
    concurrency_limit: int | None = None

    def initial_state(self) -> int:
        return 0

    def decide(self, snap: Snapshot, state: int, now_s: float) -> tuple[Decision, int]:
        self.seen.append(snap)
        reason = "scale_up" if self.replicas > snap.current_replicas else (
            "scale_down" if self.replicas < snap.current_replicas else "steady")
        return Decision(self.replicas, reason, concurrency_limit=self.concurrency_limit,
                        forecast_rps=snap.arrival_rate_rps), state + 1


BOUNDS = FleetBounds(min_replicas=1, max_replicas=20)
