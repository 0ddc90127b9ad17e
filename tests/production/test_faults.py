"""Fault-injection table: real Prometheus, the Kubernetes stand-in and real sidecars; no wrong scale-down."""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from trimtab.controllers.shell.actuators.base import WorkloadRef
from trimtab.controllers.shell.actuators.kubernetes import KubernetesActuator
from trimtab.controllers.shell.actuators.sidecar import SidecarActuator, SidecarEndpoint
from trimtab.controllers.shell.clock import ManualClock
from trimtab.controllers.shell.loop import ControlLoop, Target
from trimtab.controllers.shell.metrics import ControllerMetrics
from trimtab.controllers.shell.sources.base import TargetSelector
from trimtab.controllers.shell.sources.prometheus import PrometheusSource
from tests.conftest import REPO_ROOT, free_port
from trimtab.common.process import stop_all
from tests.production.conftest import BOUNDS, Exporter, Prometheus, ScriptedPolicy

pytestmark = pytest.mark.slow
START_REPLICAS = 6
TOKEN = "fault-token"


@pytest.fixture(scope="module")
def metrics_env(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("faults")
    exps = {m: Exporter(m) for m in ("healthy", "nanm", "gone")}
    for e in exps.values():
        e.queue.labels(e.model).set(1.0)
        e.in_flight.labels(e.model).set(4.0)
    prom = Prometheus(tmp, [(e.port, {"namespace": "prod", "pod": f"{m}-0"})
                            for m, e in exps.items()])
    stop = threading.Event()

    def traffic() -> None:
        while not stop.wait(0.1):
            for e in list(exps.values()):
                e.serve_requests(1)

    threading.Thread(target=traffic, daemon=True).start()
    prom.start()
    try:
        prom.wait_for("count(count_over_time(trimtab_requests_total[5s]) >= 4) >= 3")
        yield {"prom": prom, "exporters": exps, "tmp": tmp}
    finally:
        stop.set()
        prom.stop()
        for e in exps.values():
            e.stop()


@dataclass
class Rig:
    loop: ControlLoop
    clock: ManualClock
    policy: ScriptedPolicy
    standin: object
    name: str

    def replicas(self) -> int:
        return self.standin.get("deployments", "prod", self.name)["spec"]["replicas"]

    def tick(self):
        (rec,) = self.loop.tick(self.clock.now_s())
        self.clock.advance(15.0)
        return rec

    def metric(self, name: str, **labels) -> float:
        base = {"namespace": "prod", "workload": self.name, "model": self.name}
        return self.loop.metrics.value(name, {**base, **labels}) or 0.0


def make_rig(standin, kube_api, prom_url: str, model: str, extra_actuators=()) -> Rig:
    standin.add_deployment("prod", model, replicas=START_REPLICAS)
    policy = ScriptedPolicy(START_REPLICAS, concurrency_limit=None)
    clock = ManualClock(0.0)
    target = Target(WorkloadRef("Deployment", "prod", model),
                    TargetSelector(f"prod/{model}", {"namespace": "prod", "model": model}),
                    policy, model=model, bounds=BOUNDS, warmup_s=0.0)
    loop = ControlLoop([target], PrometheusSource(prom_url, timeout_s=2.0, staleness_s=10.0),
                       [KubernetesActuator(kube_api), *extra_actuators], clock,
                       ControllerMetrics(), window_s=5.0)
    return Rig(loop, clock, policy, standin, model)


def start_sidecar(port: int, token_file: Path, log: Path) -> subprocess.Popen:
    import json
    import urllib.request

    proc = subprocess.Popen([str(REPO_ROOT / ".venv/bin/trimtab"), "sidecar", "--gpu", "fake",
                             "--upstream", "http://127.0.0.1:9", "--metrics-port", str(port),
                             "--control-token-file", str(token_file)],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/control/v1/settings",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(req, timeout=1) as r:
                json.load(r)
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("sidecar did not start")


@dataclass
class Case:
    model: str
    inject: Callable[[dict], None]
    clear: Callable[[dict], None]
    hold: set[str] | None = None       # holding reasons that may be exported under the fault
    error: tuple[str, str] | None = None  # (actuator, error) counted under the fault
    scale_down_blocked: bool = True    # metric faults hold; an API fault just fails to apply
    visible: str | None = None         # PromQL that answers once Prometheus scraped the fault


def _prom_stop(env):
    env["metrics_env"]["prom"].stop()


def _prom_start(env):
    prom = env["metrics_env"]["prom"]
    prom.start()
    prom.wait_for("count_over_time(trimtab_requests_total{model='healthy'}[5s]) >= 3")


def _nan(env):
    env["metrics_env"]["exporters"]["nanm"].in_flight.labels("nanm").set(float("nan"))


def _un_nan(env):
    env["metrics_env"]["exporters"]["nanm"].in_flight.labels("nanm").set(4.0)


def _exporter_down(env):
    env["metrics_env"]["exporters"]["gone"].stop()


def _exporter_up(env):
    old = env["metrics_env"]["exporters"]["gone"]
    from prometheus_client import start_http_server

    old.server, old.thread = start_http_server(old.port, "127.0.0.1", registry=old.registry)
    env["metrics_env"]["prom"].wait_for("count_over_time(trimtab_in_flight_requests{model='gone'}[5s]) >= 3")


def _api(code):
    return lambda env: env["standin"].inject(code, count=1000, match="PUT")


def _api_clear(env):
    env["standin"].clear_faults()


def _sidecar_down(env):
    env["standin"].add_pod("prod", "healthy-0", {"app": "healthy"}, admin_port=env["sidecar_port"])


def _sidecar_up(env):
    env["procs"].append(start_sidecar(env["sidecar_port"], env["token_file"],
                                      env["tmp"] / "sidecar.log"))


CASES = [
    pytest.param(Case("healthy", _prom_stop, _prom_start, hold={"source_error"}),
                 id="prometheus-stopped-mid-run"),
    pytest.param(Case("nanm", _nan, _un_nan, hold={"missing"},
                      visible='trimtab_in_flight_requests{model="nanm"} != 0 * 1 + '
                              'trimtab_in_flight_requests{model="nanm"}'), id="metrics-nan"),
    pytest.param(Case("gone", _exporter_down, _exporter_up, hold={"stale", "missing"},
                      visible='absent(trimtab_in_flight_requests{model="gone"})'),
                 id="metrics-missing"),
    pytest.param(Case("healthy", _api(409), _api_clear, error=("kubernetes", "conflict"),
                      scale_down_blocked=False), id="api-409"),
    pytest.param(Case("healthy", _api(429), _api_clear, error=("kubernetes", "throttled"),
                      scale_down_blocked=False), id="api-429"),
    pytest.param(Case("healthy", _api(500), _api_clear, error=("kubernetes", "server_error"),
                      scale_down_blocked=False), id="api-500"),
    pytest.param(Case("healthy", _sidecar_down, _sidecar_up,
                      error=("sidecar", "sidecar_unreachable"), scale_down_blocked=False),
                 id="sidecar-down"),
]


@pytest.mark.parametrize("case", CASES)
def test_fault_table(case: Case, metrics_env, standin, kube_api, tmp_path) -> None:
    env = {"metrics_env": metrics_env, "standin": standin, "tmp": tmp_path, "procs": [],
           "sidecar_port": free_port(), "token_file": tmp_path / "token"}
    env["token_file"].write_text(TOKEN)
    extra = []
    if case.error and case.error[0] == "sidecar":
        extra = [SidecarActuator(kube_api, {f"prod/{case.model}": SidecarEndpoint(
            str(env["token_file"]), timeout_s=1.0)})]
    rig = make_rig(standin, kube_api, metrics_env["prom"].url, case.model, extra)
    if extra:
        rig.policy.concurrency_limit = 3
    try:
        # Healthy first: the policy is content, nothing held, nothing failing.
        rec = rig.tick()
        assert rec.hold is None and rec.errors == () and rig.replicas() == START_REPLICAS

        # The fault, and a policy that now wants to scale down.
        case.inject(env)
        if case.visible:
            metrics_env["prom"].wait_for(case.visible)
        rig.policy.replicas = 2
        seen_hold = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rec = rig.tick()
            if rec.hold:
                seen_hold.add(rec.hold)
            if case.scale_down_blocked:
                assert rig.replicas() == START_REPLICAS, "scaled down on bad data"
            if case.hold and seen_hold & case.hold:
                break
            if case.error and rig.metric("trimtab_controller_actuation_errors_total",
                                         actuator=case.error[0], error=case.error[1]) >= 1:
                break
            time.sleep(0.3)
        if case.hold:
            held = seen_hold & case.hold
            assert held, f"no hold exported: {seen_hold}"
            assert rig.metric("trimtab_controller_holding", reason=held.pop()) == 1.0
            assert rig.replicas() == START_REPLICAS
        if case.error:
            assert rig.metric("trimtab_controller_actuation_errors_total",
                              actuator=case.error[0], error=case.error[1]) >= 1
            if case.error[0] == "kubernetes":
                assert rig.replicas() == START_REPLICAS       # nothing half-applied
            else:
                assert rig.replicas() == 2     # a failing sidecar never blocks the scale

        # The fault clears: the decision goes through within a few ticks.
        case.clear(env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rec = rig.tick()
            if rig.replicas() == 2 and rec.hold is None and not rec.errors:
                break
            time.sleep(0.3)
        assert rig.replicas() == 2 and rec.hold is None and rec.errors == (), rec
        for reason in ("missing", "stale", "source_error", "backoff"):
            assert rig.metric("trimtab_controller_holding", reason=reason) == 0.0
    finally:
        stop_all(env["procs"])
