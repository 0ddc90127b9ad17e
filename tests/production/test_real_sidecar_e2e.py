"""End to end on loopback: traffic through a real `trimtab sidecar`, a real Prometheus, the source and actuators."""
from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from trimtab.controllers.shell.actuators.base import WorkloadRef
from trimtab.controllers.shell.actuators.sidecar import SidecarActuator, SidecarEndpoint
from trimtab.controllers.shell.sources.base import TargetSelector
from trimtab.controllers.shell.sources.prometheus import PrometheusSource
from trimtab.controllers.core.types import Decision
from tests.conftest import REPO_ROOT, free_port
from tests.production.conftest import Prometheus

pytestmark = pytest.mark.slow
TOKEN = "e2e-token"


class Upstream(BaseHTTPRequestHandler):
    """A stand-in model server: answers every request after 20 ms."""

    def do_GET(self) -> None:
        time.sleep(0.02)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _wait_http(url: str, headers: dict | None = None, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                        timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_source_reads_a_real_sidecar_and_the_actuator_changes_it(tmp_path: Path, standin,
                                                                  kube_api) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proxy_port, admin_port = free_port(), free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    sidecar = subprocess.Popen(
        [str(REPO_ROOT / ".venv/bin/trimtab"), "sidecar", "--gpu", "fake", "--proxy",
         "--upstream", f"http://127.0.0.1:{upstream.server_address[1]}",
         "--listen", f"127.0.0.1:{proxy_port}", "--metrics-port", str(admin_port),
         "--model", "llama", "--control-token-file", str(token_file)],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "sidecar.log").open("w"))
    prom = Prometheus(tmp_path, [(admin_port, {"namespace": "prod", "pod": "llama-0"})])
    stop = threading.Event()
    sent = [0]

    def traffic() -> None:
        while not stop.wait(0.05):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{proxy_port}/v1/x", timeout=2):
                    sent[0] += 1
            except OSError:
                pass

    try:
        _wait_http(f"http://127.0.0.1:{admin_port}/metrics")
        threading.Thread(target=traffic, daemon=True).start()
        prom.start()
        prom.wait_for('count_over_time(trimtab_requests_total{model="llama",outcome="ok"}[10s])'
                      ' >= 8')
        snap = PrometheusSource(prom.url).read(
            [TargetSelector("prod/llama", {"namespace": "prod", "model": "llama"})],
            0.0, 10.0)["prod/llama"]
        assert snap.missing == frozenset() and snap.stale == frozenset()
        assert 2.0 < snap.arrival_rate_rps < 25.0          # one client, ~20 ms per request
        assert snap.completion_rate_rps == pytest.approx(snap.arrival_rate_rps)
        assert snap.ready_replicas == 1
        assert 0.01 < snap.latency.quantile(0.5) <= 0.1    # the upstream's 20 ms plus proxying
        # The fake GPU's series, joined to the target through the pod.
        assert 0.0 <= snap.gpu_memory_used_ratio <= 1.0
        assert 0.0 <= snap.gpu_busy_ratio <= 1.0

        # The sidecar actuator finds the pod through the stand-in and changes the real knob;
        # Prometheus then scrapes the new value from the sidecar.
        standin.add_deployment("prod", "llama", replicas=1)
        standin.add_pod("prod", "llama-0", {"app": "llama"}, admin_port=admin_port)
        act = SidecarActuator(kube_api, {"prod/llama": SidecarEndpoint(str(token_file))})
        act.apply(WorkloadRef("Deployment", "prod", "llama"),
                  Decision(1, "steady", concurrency_limit=3, max_batch_size=16), "steady")
        prom.wait_for('trimtab_concurrency_limit{pod="llama-0"} == 3')
        req = urllib.request.Request(f"http://127.0.0.1:{admin_port}/control/v1/settings",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=2) as r:
            assert json.load(r)["max_batch_size"] == 16
    finally:
        stop.set()
        prom.stop()
        sidecar.terminate()
        try:
            sidecar.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sidecar.kill()
        upstream.shutdown()
