"""`trimtab controller --dry-run` against a real Prometheus, bad configs, and `trimtab controller bench`."""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from trimtab.controllers.shell.sources.prometheus import queries_for
from tests.conftest import REPO_ROOT, free_port
from tests.production.conftest import Exporter, Prometheus

TRIMTAB = str(REPO_ROOT / ".venv/bin/trimtab")


def test_dry_run_of_the_example_config_prints_decisions(tmp_path: Path) -> None:
    exporter = Exporter("llama")
    exporter.in_flight.labels("llama").set(6.0)
    exporter.queue.labels("llama").set(2.0)
    prom = Prometheus(tmp_path, [(exporter.port, {"namespace": "models", "pod": "llama-0"})])
    stop = threading.Event()

    def traffic() -> None:
        while not stop.wait(0.1):
            exporter.serve_requests(3)

    threading.Thread(target=traffic, daemon=True).start()
    try:
        prom.start()
        prom.wait_for('count_over_time(trimtab_requests_total{model="llama"}[10s]) >= 3')
        cfg = yaml.safe_load((REPO_ROOT / "examples" / "controller.yaml").read_text())
        cfg["prometheus"]["url"] = prom.url        # the only change: where Prometheus is
        path = tmp_path / "controller.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.run([TRIMTAB, "controller", "--config", str(path), "--dry-run",
                               "--once"], capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        prom.stop()
        exporter.stop()
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("tick 1 models/llama")]
    assert len(lines) == 1, proc.stdout
    line = lines[0]
    assert "applied=no (dry-run)" in line and "hold=-" in line
    assert "shadow[hpa]=" in line and "shadow[kpa]=" in line
    replicas = int(line.split(" replicas=")[1].split()[0])
    assert 1 <= replicas <= cfg["targets"][0]["replicas"]["max"]
    assert "Traceback" not in proc.stderr


def test_dry_run_without_prometheus_holds_and_says_why(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO_ROOT / "examples" / "controller.yaml").read_text())
    cfg["prometheus"]["url"] = "http://127.0.0.1:9"   # nothing listens (discard port)
    path = tmp_path / "controller.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([TRIMTAB, "controller", "--config", str(path), "--dry-run", "--once"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "hold=source_error" in proc.stdout
    assert "every target holds" in proc.stderr


@pytest.mark.parametrize("mutate, fragment", [
    (lambda c: c.update(interval_s=-1), "interval_s = -1"),
    (lambda c: c["targets"][0].update(policy="nosuch"), "unknown policy"),
    # An address that is not this machine's (TEST-NET-3): refused with the key, no traceback.
    (lambda c: c.update(metrics_host="203.0.113.9", metrics_port=free_port()),
     "cannot serve /metrics on 203.0.113.9"),
], ids=["negative-interval", "unknown-policy", "metrics-host-not-ours"])
def test_bad_config_exits_2_with_a_clear_message(tmp_path: Path, mutate, fragment) -> None:
    cfg = yaml.safe_load((REPO_ROOT / "examples" / "controller.yaml").read_text())
    mutate(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([TRIMTAB, "controller", "--config", str(path), "--dry-run", "--once"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


def test_bench_small_run_writes_the_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([TRIMTAB, "controller", "bench", "--targets", "20", "--ticks", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(out.read_text())
    assert {"targets", "tick_seconds_p50", "tick_seconds_max", "cpu_seconds_per_tick",
            "peak_rss_bytes"} <= set(figures)
    assert figures["targets"] == 20
    assert figures["targets_with_full_metrics"] == 20      # the backfilled series were read
    assert figures["prometheus_requests_per_tick"] == len(queries_for(("model",), "", 60))
    assert 0 < figures["tick_seconds_p50"] <= figures["tick_seconds_max"]
    assert figures["peak_rss_bytes"] > 10 * 2**20


def test_controller_leads_exports_metrics_and_sigterm_releases_the_lease(tmp_path: Path,
                                                                         standin) -> None:
    import signal
    import time
    import urllib.request

    from tests.conftest import free_port

    standin.add_deployment("models", "llama", replicas=3)
    cfg = yaml.safe_load((REPO_ROOT / "examples" / "controller.yaml").read_text())
    metrics_port = free_port()
    cfg.update(interval_s=1, metrics_port=metrics_port,
               kubeconfig=str(standin.write_kubeconfig(tmp_path / "kubeconfig")))
    cfg["prometheus"]["url"] = f"http://127.0.0.1:{free_port()}"   # down: every tick holds
    cfg["leader_election"]["enabled"] = True
    path = tmp_path / "controller.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([TRIMTAB, "controller", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        page = ""
        while time.monotonic() < deadline and "trimtab_controller_is_leader 1.0" not in page:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                            timeout=1) as r:
                    page = r.read().decode()
            except OSError:
                pass
            time.sleep(0.3)
        assert "trimtab_controller_is_leader 1.0" in page
        assert ('trimtab_controller_holding{model="llama",namespace="models",'
                'reason="source_error",workload="llama"} 1.0') in page
        holder = standin.get("leases", "trimtab", "trimtab-controller")["spec"]["holderIdentity"]
        assert holder.endswith(f"_{proc.pid}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "holderIdentity" not in standin.get("leases", "trimtab", "trimtab-controller")["spec"]
    assert standin.get("deployments", "models", "llama")["spec"]["replicas"] == 3   # held
    assert standin.count("PUT", "/scale") == 0
