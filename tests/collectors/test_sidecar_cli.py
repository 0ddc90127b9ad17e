"""End to end: `trimtab sidecar` as a subprocess beside a loopback upstream, scraped over HTTP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trimtab.collectors import names
from tests.conftest import REPO_ROOT, free_port

TRIMTAB = [sys.executable, "-m", "trimtab.cli"]
# Families the sidecar exports in proxy mode with --gpu fake, before any traffic.
SIDECAR_FAMILIES = [
    names.REQUESTS, names.REQUEST_DURATION, names.QUEUE_DURATION, names.TIME_TO_FIRST_BYTE,
    names.QUEUE_DEPTH, names.IN_FLIGHT, names.PROXY_REJECTED, names.CONCURRENCY_LIMIT,
    names.MAX_BATCH_SIZE, names.BATCH_TIMEOUT, names.CONTROL_REQUESTS, names.GPU_INFO,
    names.GPU_UP, names.GPU_MEMORY_USED, names.GPU_MEMORY_TOTAL, names.GPU_MEMORY_RESERVED,
    names.GPU_UTILIZATION, names.GPU_MEMORY_UTILIZATION, names.GPU_POWER, names.GPU_POWER_LIMIT,
    names.GPU_ENERGY, names.GPU_TEMPERATURE, names.GPU_THROTTLE, names.GPU_PROCESS_MEMORY,
    names.GPU_COLLECTOR_ENABLED, names.COLLECTOR_SUCCESS, names.COLLECTOR_DURATION,
    names.COLLECTOR_LAST_SUCCESS]


class _Upstream(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server naming)
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _wait_for(url: str, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if _get(url, 0.5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up within {deadline_s} s")


def _value(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def sidecar_proc(upstream, tmp_path):
    listen, admin = free_port(), free_port()
    gpu_file = tmp_path / "gpus.yaml"
    gpu_file.write_text("count: 2\nmemory_used_ratio: 0.5\n")
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    cmd = TRIMTAB + ["sidecar", "--proxy", "--gpu", "fake", "--upstream", upstream,
                     "--listen", f"127.0.0.1:{listen}", "--metrics-port", str(admin),
                     "--model", "resnet", "--slo-latency-s", "0.5",
                     "--fake-gpu-config", str(gpu_file), "--gpu-poll-s", "0.2",
                     "--control-token-file", str(token)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_for(f"http://127.0.0.1:{admin}/healthz")
        yield proc, listen, admin, gpu_file
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_sidecar_exports_every_family_before_traffic_and_counts_requests(sidecar_proc):
    proc, listen, admin, gpu_file = sidecar_proc
    time.sleep(0.5)                                   # one GPU poll
    status, text = _get(f"http://127.0.0.1:{admin}/metrics")
    assert status == 200
    missing = [f for f in SIDECAR_FAMILIES if f"# TYPE {f}" not in text
               and f"# TYPE {f}_total" not in text]  # counters' TYPE lines may carry _total
    assert missing == []
    assert _value(text, 'trimtab_requests_total{model="resnet",outcome="ok"}') == 0
    assert 'le="0.5"' in text
    req = urllib.request.Request(f"http://127.0.0.1:{listen}/v2/models/resnet/infer",
                                 data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200 and json.loads(r.read()) == {"ok": True}
    _, text = _get(f"http://127.0.0.1:{admin}/metrics")
    assert _value(text, 'trimtab_requests_total{model="resnet",outcome="ok"}') == 1
    assert _get(f"http://127.0.0.1:{admin}/readyz")[0] == 200


def test_fake_gpu_steered_at_runtime_through_the_file(sidecar_proc):
    proc, listen, admin, gpu_file = sidecar_proc
    series = 'trimtab_gpu_memory_used_bytes{gpu="1",uuid="GPU-fake0000-0000-0000-0000-000000000001"}'
    gpu_file.write_text("count: 2\nmemory_used_ratio: 0.99\nlost: [0]\n")
    total = 80 * 1024 ** 3
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, text = _get(f"http://127.0.0.1:{admin}/metrics")
        if _value(text, series) == pytest.approx(0.99 * total, rel=1e-6):
            break
        time.sleep(0.1)
    assert _value(text, series) == pytest.approx(0.99 * total, rel=1e-6)
    assert _value(text, 'trimtab_gpu_up{gpu="0",uuid="GPU-fake0000-0000-0000-0000-000000000000"}') == 0


def test_control_api_over_http(sidecar_proc):
    proc, listen, admin, _ = sidecar_proc
    url = f"http://127.0.0.1:{admin}/control/v1/settings"
    req = urllib.request.Request(url, data=b'{"concurrency_limit": 3}', method="PUT",
                                 headers={"Authorization": "Bearer t0ken"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert json.loads(r.read())["concurrency_limit"] == 3
    _, text = _get(f"http://127.0.0.1:{admin}/metrics")
    assert _value(text, "trimtab_concurrency_limit") == 3


def test_sigterm_exits_cleanly(sidecar_proc):
    proc, *_ = sidecar_proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    output = proc.stdout.read()
    assert "Traceback" not in output


def test_port_in_use_is_a_clear_error_not_a_traceback():
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(TRIMTAB + ["sidecar", "--upstream", "http://127.0.0.1:9",
                                           "--gpu", "off", "--metrics-port", str(port)],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "cannot listen" in result.stderr and str(port) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--gpu", "maybe"], "auto, off, fake"),
    (["--listen", "nowhere"], "HOST:PORT"),
    (["--slo-latency-s", "-1"], "must be > 0"),
    (["--model", "other"], "reserved"),
    (["--control-token-file", "/nonexistent/token"], "cannot read"),
    (["--adapter", "prometheus"], "--adapter-mapping"),
    (["--concurrency-limit", "0"], "--concurrency-limit"),
], ids=["gpu", "listen", "slo", "model-other", "token-file", "mapping", "limit"])
def test_bad_options_name_the_option_and_the_rule(args, message):
    cmd = TRIMTAB + ["sidecar", "--upstream", "http://127.0.0.1:9", "--gpu", "off",
                     "--metrics-port", str(free_port())] + args
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30,
                            env={**os.environ, "COLUMNS": "300"})
    assert result.returncode != 0
    assert message in " ".join((result.stdout + result.stderr).split())
    assert "Traceback" not in result.stderr


# --- defaults: written once, in collectors/settings.py ----------------------------------------
def _sidecar_options() -> dict[str, object]:
    import typer

    from trimtab.collectors import cli

    app = typer.Typer()
    cli.register(app)
    group = typer.main.get_command(app).commands["sidecar"]     # type: ignore[attr-defined]
    return {p.name: p.default for p in group.params}


@pytest.mark.parametrize("option, model, field", [
    ("metrics_port", "SidecarConfig", "metrics_port"),
    ("metrics_host", "SidecarConfig", "metrics_host"),
    ("proxy", "SidecarConfig", "proxy"),
    ("adapter_interval_s", "SidecarConfig", "adapter_interval_s"),
    ("gpu", "SidecarConfig", "gpu"),
    ("gpu_poll_s", "SidecarConfig", "gpu_poll_s"),
    ("triton_model_control", "SidecarConfig", "triton_model_control"),
    ("triton_apply_min_interval_s", "SidecarConfig", "triton_apply_min_interval_s"),
    ("concurrency_limit", "ControlSettings", "concurrency_limit"),
    ("max_batch_size", "ControlSettings", "max_batch_size"),
    ("batch_timeout_ms", "ControlSettings", "batch_timeout_ms"),
    ("max_queue_length", "ProxyLimits", "max_queue_length"),
    ("queue_timeout_s", "ProxyLimits", "queue_timeout_s"),
    ("upstream_timeout_s", "ProxyLimits", "upstream_timeout_s"),
    ("body_timeout_s", "ProxyLimits", "body_timeout_s"),
    ("max_header_bytes", "ProxyLimits", "max_header_bytes"),
    ("max_body_bytes", "ProxyLimits", "max_body_bytes"),
])
def test_each_cli_default_is_the_settings_models(option: str, model: str, field: str) -> None:
    from trimtab.collectors import settings

    assert _sidecar_options()[option] == getattr(settings, model).model_fields[field].default


def test_the_cli_with_no_options_builds_the_settings_models_defaults(monkeypatch) -> None:
    """What `trimtab sidecar --upstream URL` runs with is SidecarConfig(upstream=URL) exactly."""
    import typer
    from typer.testing import CliRunner

    from trimtab.collectors import cli, sidecar
    from trimtab.collectors.settings import SidecarConfig

    built: list[SidecarConfig] = []

    class Capture:
        def __init__(self, config: SidecarConfig) -> None:
            built.append(config)

        async def run_forever(self) -> None:
            return None

    monkeypatch.setattr(sidecar, "Sidecar", Capture)
    monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    app = typer.Typer()
    cli.register(app)
    result = CliRunner().invoke(app, ["sidecar", "--upstream", "http://127.0.0.1:1"])
    assert result.exit_code == 0, result.output
    assert built == [SidecarConfig(upstream="http://127.0.0.1:1")]
