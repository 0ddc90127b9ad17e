"""Every panel of the LLM board runs on a real Prometheus with the shipped recording rules,
scraping sidecar adapters fed an SGLang page (advancing) and a vLLM page (issue 16)."""
from __future__ import annotations

import time
from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from trimtab.alerts.config import DEFAULT_CONFIG
from trimtab.alerts.rulefile import dump_yaml, rule_file
from trimtab.collectors.adapter_rules import VLLM_RULES
from trimtab.collectors.adapters import ScrapeAdapter
from trimtab.collectors.health import CollectorHealth
from trimtab.common.prometheus import PrometheusServer, require_binary
from trimtab.dashboards import build as dash_build
from tests.collectors.support import load_fixture
from tests.conftest import free_port
from tests.production.test_llm_sources import QWEN, SidecarExporter

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
VARIABLES = {"$namespace": "prod", "$model": ".*", "$__rate_interval": "20s",
             "$__range": "30s"}


def substitute(expr: str) -> str:
    for var, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


class StaticVllm:
    """A vLLM adapter serving the reconstructed vLLM page as it is."""

    def __init__(self) -> None:
        adapter = ScrapeAdapter("vllm", "http://127.0.0.1:9/metrics", VLLM_RULES, (LLAMA,),
                                CollectorHealth(), clock=lambda: 0.0)
        adapter.ingest(load_fixture("vllm_metrics.txt"))
        registry = CollectorRegistry()
        registry.register(adapter)
        self.port = free_port()
        self.server, _ = start_http_server(self.port, "127.0.0.1", registry=registry)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def prom(tmp_path_factory) -> Iterator[PrometheusServer]:
    sglang, vllm = SidecarExporter(), StaticVllm()
    work = tmp_path_factory.mktemp("llm-board")
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": ["rules.yaml"],
              "scrape_configs": [{"job_name": "trimtab-sidecar", "scrape_interval": "1s",
                                  "static_configs": [
                                      {"targets": [f"127.0.0.1:{sglang.port}"],
                                       "labels": {"namespace": "prod", "pod": "qwen-0"}},
                                      {"targets": [f"127.0.0.1:{vllm.port}"],
                                       "labels": {"namespace": "prod", "pod": "llama-0"}}]}]}
    server = PrometheusServer(work, config, binary=require_binary("prometheus"), files={
        "rules.yaml": dump_yaml(rule_file(DEFAULT_CONFIG, interval="1s"))}).start(timeout_s=30)
    try:
        client = server.client()
        deadline = time.monotonic() + 40
        while not client.instant("count_over_time(trimtab_llm_prompt_tokens_total[30s]) >= 12"):
            assert time.monotonic() < deadline, "no scrapes within 40 s"
            time.sleep(0.5)
        yield server
    finally:
        server.stop()
        sglang.stop()
        vllm.stop()


def _panels() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for title, expr in dash_build.panel_queries(dash_build.board_dict("llm")):
        out.setdefault(title, []).append(expr)
    return out


def _values(prom: PrometheusServer, expr: str) -> dict[str, float]:
    return {r["metric"].get("model", ""): float(r["value"][1])
            for r in prom.client().instant(substitute(expr))}


def test_every_llm_panel_returns_data(prom):
    empty = [(title, e) for title, exprs in _panels().items() for e in exprs
             if not prom.client().instant(substitute(e))]
    assert not empty, empty


def test_llm_panels_show_what_the_engines_report(prom):
    panels = _panels()
    running, waiting = panels["Sequences running and waiting"]
    assert _values(prom, running) == {QWEN: 24.0, LLAMA: 12.0}
    assert _values(prom, waiting) == {QWEN: 7.0, LLAMA: 3.0}
    assert _values(prom, panels["KV-cache usage (fullest replica)"][0]) == pytest.approx(
        {QWEN: 0.62, LLAMA: 0.4625})
    assert _values(prom, panels["Preemptions"][0]) == {LLAMA: 0.0}
    assert _values(prom, panels["Prefix-cache hit ratio"][0]) == pytest.approx({QWEN: 0.35})
    # SGLang's first tokens all land in (0.25, 0.5]: every one within the 1 s bound
    assert _values(prom, panels["TTFT attainment (time range)"][0])[QWEN] == 1.0
    assert 0.25 < _values(prom, panels["TTFT p99 vs bound"][0])[QWEN] <= 0.5
    prompt, _ = panels["Prompt and generation tokens"]
    assert 300 < _values(prom, prompt)[QWEN] < 1500          # 1000/s, loose on a busy box
