"""A real Prometheus on loopback for the live loop: config, start, wait ready, range queries, stop.

It scrapes the sidecar, the controller and Ray's metrics agent every second or two. Recording
rules map the demo model's batch metrics (exported by Ray as ``ray_trimtab_model_batch_*``,
one series per replica) onto the names the production Prometheus source reads
(``trimtab_batch_size_*``, ``trimtab_batch_duration_seconds_*`` with ``model`` and ``pod``).
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from trimtab.up import wall_clock
from trimtab.collectors import names as n


def _ray_series(metric: str, model_label: str = "deployment") -> str:
    """Per-replica sum of a Ray-exported series, relabelled to trimtab's model/pod labels."""
    inner = f"sum by ({model_label}, replica) ({metric})"
    return (f'label_replace(label_replace({inner}, "model", "$1", "{model_label}", "(.*)"),'
            f' "pod", "$1", "replica", "(.*)")')


def recording_rules() -> dict:
    count = _ray_series("ray_trimtab_model_batch_size_count")
    return {"groups": [{"name": "trimtab_ray_batches", "interval": "1s", "rules": [
        {"record": n.BATCH_SIZE + "_count", "expr": count},
        {"record": n.BATCH_SIZE + "_sum", "expr": _ray_series("ray_trimtab_model_batch_items_total")},
        {"record": n.BATCH_DURATION + "_count", "expr": count},
        {"record": n.BATCH_DURATION + "_sum",
         "expr": _ray_series("ray_trimtab_model_batch_seconds_total")},
    ]}]}


def prometheus_config(sidecar_port: int, controller_port: int, ray_port: int,
                      scrape_interval_s: float = 1.0) -> dict:
    def job(name: str, port: int, interval_s: float, keep: str | None = None) -> dict:
        cfg: dict = {"job_name": name, "scrape_interval": f"{interval_s:g}s",
                     "scrape_timeout": f"{interval_s:g}s",
                     "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        if keep:
            cfg["metric_relabel_configs"] = [{"source_labels": ["__name__"], "regex": keep,
                                              "action": "keep"}]
        return cfg
    return {
        "global": {"scrape_interval": f"{scrape_interval_s:g}s",
                   "evaluation_interval": f"{scrape_interval_s:g}s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            job("sidecar", sidecar_port, scrape_interval_s),
            job("controller", controller_port, scrape_interval_s),
            job("ray", ray_port, 2 * scrape_interval_s, keep="ray_trimtab_model_.*"),
        ],
    }


@dataclass
class PrometheusProcess:
    """A Prometheus server in ``data_dir`` on ``127.0.0.1:port``; ``start()``, ``stop()``."""

    binary: str
    data_dir: Path
    port: int
    config: dict
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> "PrometheusProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "prometheus.yml").write_text(yaml.safe_dump(self.config))
        (self.data_dir / "rules.yml").write_text(yaml.safe_dump(recording_rules()))
        log = open(self.data_dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.data_dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline_s = wall_clock.now_s() + timeout_s
        while wall_clock.now_s() < deadline_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.proc.returncode}); see"
                                   f" {self.data_dir / 'prometheus.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            wall_clock.sleep_s(0.2)
        raise TimeoutError(f"prometheus not ready on {self.url} after {timeout_s} s")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def stop_process(proc: subprocess.Popen | None, grace_s: float = 10.0) -> None:
    """SIGTERM a child we started, then SIGKILL it if it has not exited within ``grace_s``."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def find_prometheus() -> str | None:
    for c in (shutil.which("prometheus"), "/usr/bin/prometheus"):
        if c and Path(c).exists():
            return c
    return None


def query(url: str, promql: str, at_unix_s: float, timeout_s: float = 10.0) -> list[dict]:
    return _get(url, "/api/v1/query", {"query": promql, "time": f"{at_unix_s:.3f}"},
                timeout_s)


def query_range(url: str, promql: str, start_unix_s: float, end_unix_s: float,
                step_s: float, timeout_s: float = 20.0) -> list[dict]:
    return _get(url, "/api/v1/query_range", {"query": promql, "start": f"{start_unix_s:.3f}",
                                             "end": f"{end_unix_s:.3f}", "step": f"{step_s:g}"},
                timeout_s)


def _get(url: str, path: str, params: dict, timeout_s: float) -> list[dict]:
    data = urllib.parse.urlencode(params).encode()
    req = urllib.request.Request(url + path, data=data, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise ValueError(f"{path} {params.get('query')!r}: {body.get('error')}")
    return body["data"]["result"]


def series(result: list[dict]) -> tuple[list[float], list[float]]:
    """First series of a range result as (unix times, values), NaNs dropped."""
    if not result:
        return [], []
    ts, vs = [], []
    for t, v in result[0]["values"]:
        f = float(v)
        if math.isfinite(f):
            ts.append(float(t))
            vs.append(f)
    return ts, vs
