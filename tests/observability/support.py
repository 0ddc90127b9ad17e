"""Helpers for the observability tests: real Prometheus, Alertmanager and sidecar processes, always stopped."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.conftest import REPO_ROOT, free_port, require_binary

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
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log.close()


def wait_http(url: str, proc: Proc, timeout_s: float = 30.0) -> None:
    """Poll ``url`` until it answers 200; fail with the process log if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            pytest.fail(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    pytest.fail(f"{proc.name} did not answer {url} within {timeout_s} s:\n{proc.log_tail()}")


def start_prometheus(start: Callable[..., Proc], work: Path, config: dict[str, Any],
                     data_dir: Path | None = None, extra: tuple[str, ...] = ()) -> "PromAPI":
    port = free_port()
    cfg_path = work / "prometheus.yml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    data = data_dir or work / "prom-data"
    proc = start("prometheus", [require_binary("prometheus"), f"--config.file={cfg_path}",
                                f"--storage.tsdb.path={data}",
                                f"--web.listen-address=127.0.0.1:{port}", *extra],
                 work / "prometheus.log")
    wait_http(f"http://127.0.0.1:{port}/-/ready", proc)
    return PromAPI(f"http://127.0.0.1:{port}", proc)


class PromAPI:
    """A thin client of Prometheus' HTTP API (GET /api/v1/...)."""

    def __init__(self, base: str, proc: Proc) -> None:
        self.base, self.proc = base, proc

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            return json.load(exc)

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.get("/api/v1/query", **params)

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> dict[str, Any]:
        return self.get("/api/v1/query_range", query=expr, start=f"{start:.3f}",
                        end=f"{end:.3f}", step=f"{step_s:g}")

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
