"""A real Prometheus on loopback (config, start, wait ready, stop) and a PromQL HTTP client."""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trimtab.common.ports import LOOPBACK, free_port
from trimtab.common.process import log_tail, stop_process, wait_http_ok


class BinaryMissing(RuntimeError):
    """A Debian-packaged binary (prometheus, promtool) is not installed."""


def find_binary(name: str) -> str | None:
    """Path of ``name`` on PATH or in /usr/bin, /usr/sbin (where Debian puts it); None if absent."""
    for candidate in (shutil.which(name), f"/usr/bin/{name}", f"/usr/sbin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def require_binary(name: str, package: str = "prometheus") -> str:
    """``find_binary`` or BinaryMissing naming the Debian package to install."""
    path = find_binary(name)
    if path is None:
        raise BinaryMissing(f"{name} not found: install the Debian package '{package}'")
    return path


@dataclass
class PrometheusServer:
    """A Prometheus process on ``127.0.0.1:port`` run from ``work_dir``; ``start()``, ``stop()``.

    ``config`` is the prometheus.yml content (a mapping, dumped as YAML, or text); ``files``
    are written beside it (e.g. ``{"rules.yml": ...}`` named by ``rule_files``). Port 0 picks
    a free one at start. The TSDB is ``data_dir`` (default ``work_dir/data``), so a backfilled
    directory can be served.
    """

    work_dir: Path
    config: dict[str, Any] | str = field(default_factory=lambda: {"scrape_configs": []})
    data_dir: Path | None = None
    port: int = 0
    extra_args: tuple[str, ...] = ()
    files: dict[str, Any] = field(default_factory=dict)
    binary: str | None = None
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return Path(self.work_dir) / "prometheus.log"

    def command(self) -> list[str]:
        """Write the config (and ``files``), pick the port; the argv that serves them."""
        work = Path(self.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        for name, content in {"prometheus.yml": self.config, **self.files}.items():
            (work / name).write_text(content if isinstance(content, str)
                                     else yaml.safe_dump(content, sort_keys=False))
        self.port = self.port or free_port()
        return [self.binary or require_binary("prometheus"),
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.data_dir or work / 'data'}",
                f"--web.listen-address={LOOPBACK}:{self.port}", *self.extra_args]

    def wait_ready(self, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
        """Until /-/ready answers 200; RuntimeError (with the log's tail) if it exits first."""
        wait_http_ok(self.url + "/-/ready", proc, timeout_s, self.log_path, "prometheus")

    def start(self, timeout_s: float = 60.0) -> "PrometheusServer":
        argv = self.command()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            self.wait_ready(self.proc, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def client(self, timeout_s: float = 10.0) -> "PromClient":
        return PromClient(self.url, timeout_s)

    def __enter__(self) -> "PrometheusServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _what(headers: Any, raw: bytes) -> str:
    """What a non-JSON answer was, for the log: its type and its first words."""
    kind = headers.get("Content-Type", "no Content-Type") if headers is not None else "?"
    text = " ".join(raw[:120].decode("utf-8", "replace").split())
    return f"({kind}: {text!r})"


class QueryFailed(ValueError):
    """Prometheus answered, with an error (bad PromQL, a timeout, too many samples).

    Distinct from "no series" (an empty result) and from "unreachable" (an OSError).
    """


def instant_params(promql: str, at_unix_s: float | None = None) -> dict[str, str]:
    params = {"query": promql}
    if at_unix_s is not None:
        params["time"] = f"{at_unix_s:.3f}"
    return params


def range_params(promql: str, start_unix_s: float, end_unix_s: float,
                 step_s: float) -> dict[str, str]:
    if not step_s > 0:
        raise ValueError(f"step_s = {step_s!r}: must be > 0")
    if end_unix_s < start_unix_s:
        raise ValueError(f"end_unix_s = {end_unix_s!r} is before start_unix_s = {start_unix_s!r}")
    return {"query": promql, "start": f"{start_unix_s:.3f}", "end": f"{end_unix_s:.3f}",
            "step": f"{step_s:g}"}


@dataclass
class PromClient:
    """Prometheus' HTTP API at ``url``: instant and range PromQL queries (POSTed, so a long
    query fits), and any other GET path as its raw JSON."""

    url: str
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")

    def body(self, path: str, params: dict[str, Any], post: bool = False,
             timeout_s: float | None = None) -> dict[str, Any]:
        """The JSON body Prometheus answered, an error's too (an HTTP error without one gets
        a stand-in error body); OSError if nothing answered, ValueError if it is not JSON."""
        data = urllib.parse.urlencode(params)
        if post:
            req = urllib.request.Request(self.url + path, data=data.encode(), headers={
                "Content-Type": "application/x-www-form-urlencoded"})
        else:
            req = urllib.request.Request(f"{self.url}{path}?{data}")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:
                raw = resp.read()
                try:
                    return json.loads(raw)
                except ValueError:
                    raise QueryFailed(f"{self.url}{path} answered HTTP {resp.status} "
                                      f"{_what(resp.headers, raw)}, not Prometheus' JSON "
                                      "(a proxy or a login page in front of it?)") from None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return json.loads(raw)
            except ValueError:
                return {"status": "error", "errorType": f"http {exc.code}",
                        "error": f"HTTP {exc.code} {exc.reason} {_what(exc.headers, raw)}"}

    def _result(self, path: str, params: dict[str, str], timeout_s: float | None) -> list[dict]:
        body = self.body(path, params, post=True, timeout_s=timeout_s)
        if body.get("status") != "success":
            kind = body.get("errorType")
            raise QueryFailed(f"query failed{f' ({kind})' if kind else ''}: "
                              f"{body.get('error')}: {params['query']}")
        return body["data"]["result"]

    def instant(self, promql: str, at_unix_s: float | None = None,
                timeout_s: float | None = None) -> list[dict]:
        """The vector ``promql`` gives at ``at_unix_s`` (now: None); [] is "no series"."""
        return self._result("/api/v1/query", instant_params(promql, at_unix_s), timeout_s)

    def range(self, promql: str, start_unix_s: float, end_unix_s: float, step_s: float,
              timeout_s: float | None = None) -> list[dict]:
        """The matrix of ``promql`` over [start, end] every ``step_s``; [] is "no series"."""
        return self._result("/api/v1/query_range",
                            range_params(promql, start_unix_s, end_unix_s, step_s), timeout_s)
