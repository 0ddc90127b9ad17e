"""The live demo's Prometheus: its scrape config and recording rules, on trimtab.common's server.

It scrapes the sidecar, the controller and Ray's metrics agent every second or two. Recording
rules map the demo model's batch metrics (exported by Ray as ``ray_trimtab_model_batch_*``,
one series per replica) onto the names the production Prometheus source reads
(``trimtab_batch_size_*``, ``trimtab_batch_duration_seconds_*`` with ``model`` and ``pod``).
"""
from __future__ import annotations

import math
from pathlib import Path

from trimtab.collectors import names as n
from trimtab.common.prometheus import PrometheusServer


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


def live_prometheus(work_dir: Path, port: int, sidecar_port: int, controller_port: int,
                    ray_port: int) -> PrometheusServer:
    """The demo's server in ``work_dir`` (config, rules.yml, TSDB in ``tsdb``), not started."""
    return PrometheusServer(work_dir, prometheus_config(sidecar_port, controller_port, ray_port),
                            data_dir=work_dir / "tsdb", port=port,
                            extra_args=("--log.level=warn",),
                            files={"rules.yml": recording_rules()})


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
