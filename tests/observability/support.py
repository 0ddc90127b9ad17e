"""Helpers for the observability tests: real Prometheus, Alertmanager and sidecar processes, always stopped."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.conftest import REPO_ROOT, free_port, require_binary
from trimtab.common.process import stop_process, wait_http_ok
from trimtab.common.prometheus import PromClient, PrometheusServer, instant_params, range_params

# The CLI through this interpreter, so the tests need no console script on PATH.
TRIMTAB = [sys.executable, "-m", "trimtab.cli"]


class Proc:
    """A started subprocess with its log file; ``stop`` terminates, then kills."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name, self.args, self.log_path = name, args, log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                      cwd=REPO_ROOT)

    def log_tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        stop_process(self.popen)
        self._log.close()


def wait_http(url: str, proc: Proc, timeout_s: float = 30.0) -> None:
    """Poll ``url`` until it answers 200; fail with the process log if it exits or times out."""
    try:
        wait_http_ok(url, proc.popen, timeout_s, proc.log_path, proc.name, poll_s=0.1)
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(str(exc))


def start_prometheus(start: Callable[..., Proc], work: Path, config: dict[str, Any],
                     data_dir: Path | None = None, extra: tuple[str, ...] = ()) -> "PromAPI":
    server = PrometheusServer(work, config, data_dir=data_dir or work / "prom-data",
                              extra_args=extra, binary=require_binary("prometheus"))
    proc = start("prometheus", server.command(), server.log_path)
    wait_http(f"{server.url}/-/ready", proc)
    return PromAPI(server.url, proc)


class PromAPI:
    """Prometheus' HTTP API as whole JSON bodies, errors too (the tests look at both)."""

    def __init__(self, base: str, proc: Proc) -> None:
        self.base, self.proc = base, proc
        self.client = PromClient(base, timeout_s=30)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.client.body(path, params)

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        return self.get("/api/v1/query", **instant_params(expr, at))

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> dict[str, Any]:
        return self.get("/api/v1/query_range", **range_params(expr, start, end, step_s))

    def wait_for(self, expr: str, timeout_s: float, what: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        result: dict[str, Any] = {}
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result.get("status") == "success" and result["data"]["result"]:
                return result["data"]["result"]
            time.sleep(0.25)
        pytest.fail(f"{what}: {expr} returned nothing within {timeout_s} s (last: {result})\n"
                    f"{self.proc.log_tail()}")


class Webhook:
    """Stand-in for the pager and ticket systems: a loopback HTTP server that records the
    real Alertmanager's webhook posts by path (/pager, /tickets)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook._lock:
                    hook.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def alerts(self, path: str, alertname: str | None = None,
               status: str = "firing") -> list[dict[str, Any]]:
        with self._lock:
            posts = list(self.posts)
        return [a for p, body in posts if p == path for a in body["alerts"]
                if a["status"] == status
                and (alertname is None or a["labels"].get("alertname") == alertname)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_alertmanager(start: Callable[..., Proc], work: Path, config: dict[str, Any]) -> str:
    port = free_port()
    cfg_path = work / "alertmanager.yml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = start("alertmanager", [
        require_binary("prometheus-alertmanager"), f"--config.file={cfg_path}",
        f"--storage.path={work / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",   # no gossip port: a single loopback instance
    ], work / "alertmanager.log")
    wait_http(f"http://127.0.0.1:{port}/-/ready", proc)
    return f"http://127.0.0.1:{port}"


def recorded_exprs() -> dict[str, str]:
    """Recording rule name -> its expression, from the shipped rules."""
    from trimtab.alerts.config import DEFAULT_CONFIG
    from trimtab.alerts.recording import recording_groups
    return {r.record: r.expr for rules in recording_groups(DEFAULT_CONFIG).values()
            for r in rules}


def raw_names(expr: str, records: dict[str, str]) -> set[str]:
    """Raw series a query reads, following recording rules back to what they read."""
    out: set[str] = set()
    for name in re.findall(r"(?<![\w:$])([a-zA-Z_]\w*:[\w:]+|trimtab_\w+|\bup\b)", expr):
        out |= raw_names(records[name], records) if name in records else {name}
    return out


def python() -> str:
    return sys.executable
