"""The Prometheus and sidecar sources read the LLM fields (FieldGroup.LLM) from the sidecar's
re-export of an engine's page: a real Prometheus scraping an adapter fed the SGLang fixture,
a stand-in Prometheus for failed and empty answers, and the sidecar source on two pages."""
from __future__ import annotations

import re
import threading
from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from trimtab.collectors.adapter_rules import SGLANG_RULES
from trimtab.collectors.adapters import ScrapeAdapter
from trimtab.collectors.health import CollectorHealth
from trimtab.controllers.core.types import FIELD_LLM
from trimtab.controllers.shell.sources.base import TargetSelector
from trimtab.controllers.shell.sources.prometheus import FIELD_LABEL, PrometheusSource
from trimtab.controllers.shell.sources.sidecar import SidecarSource
from tests.collectors.support import load_fixture
from tests.conftest import free_port
from tests.production.conftest import Prometheus
from tests.production.test_prometheus_empty import NOW_UNIX_S, _series, prometheus  # noqa: F401

QWEN = "Qwen/Qwen2.5-7B-Instruct"
PAGE = load_fixture("sglang-reconstructed-metrics.txt")
TARGET = TargetSelector("prod/qwen", {"namespace": "prod", "model": QWEN})
PROMPT_TOKENS_PER_S = 1000.0
SLOW_TTFT_PER_S = 10.0          # first tokens per second, each between 0.25 s and 0.5 s


def page_at(t_s: float) -> str:
    """The fixture page ``t_s`` seconds later: prompt tokens at 1000/s, ten first tokens a
    second in the (0.25, 0.5] bucket; everything else as recorded."""
    def bump(match: re.Match, by: float) -> str:
        return f"{match.group(1)} {float(match.group(2)) + by}"

    text = re.sub(r"^(sglang:prompt_tokens_total\{[^}]*\}) (\S+)$",
                  lambda m: bump(m, PROMPT_TOKENS_PER_S * t_s), PAGE, flags=re.M)
    slow = SLOW_TTFT_PER_S * t_s
    text = re.sub(r'^(sglang:time_to_first_token_seconds_bucket\{le="([^"]+)",[^}]*\}) (\S+)$',
                  lambda m: f"{m.group(1)} {float(m.group(3)) + (slow if m.group(2) == '+Inf' or float(m.group(2)) >= 0.5 else 0.0)}",
                  text, flags=re.M)
    return re.sub(r"^(sglang:time_to_first_token_seconds_count\{[^}]*\}) (\S+)$",
                  lambda m: bump(m, slow), text, flags=re.M)


def sidecar_page(text: str) -> str:
    """What a sidecar with ``--adapter sglang`` serves for one scraped engine page."""
    adapter = ScrapeAdapter("sglang", "http://127.0.0.1:9/metrics", SGLANG_RULES, (QWEN,),
                            CollectorHealth(), clock=lambda: 0.0)
    adapter.ingest(text)
    reg = CollectorRegistry()
    reg.register(adapter)
    return generate_latest(reg).decode()


def test_page_builder_moves_only_what_it_says():
    later = sidecar_page(page_at(10.0))
    assert 'trimtab_llm_prompt_tokens_total{model="Qwen/Qwen2.5-7B-Instruct"} 422800.0' in later
    assert ('trimtab_llm_time_to_first_token_seconds_bucket{le="0.5",model="Qwen/Qwen2.5-7B-'
            'Instruct"} 460.0') in later                                   # 360 + 100
    assert ('trimtab_llm_time_to_first_token_seconds_bucket{le="0.25",model="Qwen/Qwen2.5-7B-'
            'Instruct"} 300.0') in later                                   # unchanged


# --- the sidecar source: two pages, rates from the difference ---------------------------------
class PageSource(SidecarSource):
    """The sidecar source reading pages from a dict instead of HTTP (a stand-in network)."""

    def __init__(self, pages: dict[str, str | None]) -> None:
        super().__init__({TARGET.key: list(pages)})
        self.pages = pages

    def _fetch(self, url: str) -> str | None:
        return self.pages[url]


def test_sidecar_source_reads_llm_gauges_rates_and_histograms():
    src = PageSource({"pod-a": sidecar_page(page_at(0.0))})
    first = src.read([TARGET], 100.0, 15.0)[TARGET.key]
    assert first.engine_running == 24 and first.engine_waiting == 7
    assert first.kv_cache_usage_ratio == pytest.approx(0.62)
    assert first.prompt_tokens_rps is None and first.ttft is None     # no rate from one page
    assert FIELD_LLM not in first.missing
    src.pages["pod-a"] = sidecar_page(page_at(15.0))
    snap = src.read([TARGET], 115.0, 15.0)[TARGET.key]
    assert snap.prompt_tokens_rps == pytest.approx(PROMPT_TOKENS_PER_S)
    assert snap.generation_tokens_rps == 0.0
    assert snap.preemptions_rps is None                 # SGLang exports no preemption counter
    assert snap.prefix_cache_hit_ratio == pytest.approx(0.35)    # the ratio SGLang reports
    assert snap.ttft is not None and snap.ttft.total == 150      # 15 s x 10/s, all slow
    assert snap.ttft.count_over(0.25) == 150 and snap.ttft.count_over(0.5) == 0
    assert snap.tpot is not None and snap.tpot.total == 0        # the counters did not move
    assert snap.missing == frozenset()


def test_sidecar_source_names_llm_missing_once_the_engine_gauges_are_gone():
    src = PageSource({"pod-a": sidecar_page(PAGE)})
    src.read([TARGET], 0.0, 15.0)
    without = "\n".join(line for line in sidecar_page(PAGE).splitlines()
                        if "kv_cache" not in line) + "\n"
    src.pages["pod-a"] = without
    snap = src.read([TARGET], 15.0, 15.0)[TARGET.key]
    assert FIELD_LLM in snap.missing and snap.kv_cache_usage_ratio is None
    assert snap.engine_running == 24                     # the rest is still read
    src.pages["pod-a"] = None
    assert FIELD_LLM in src.read([TARGET], 30.0, 15.0)[TARGET.key].missing


def test_sidecar_source_leaves_a_request_level_target_without_llm_fields():
    page = "\n".join(line for line in sidecar_page(PAGE).splitlines()
                     if "trimtab_llm" not in line and "kv_cache" not in line) + "\n"
    snap = PageSource({"pod-a": page}).read([TARGET], 0.0, 15.0)[TARGET.key]
    assert snap.engine_running is None and FIELD_LLM not in snap.missing


# --- the Prometheus source against a stand-in: failed and empty answers -----------------------
def _tagged(field: str, value: float, **extra: str) -> dict:
    return _series({"namespace": "prod", "model": QWEN, FIELD_LABEL: field, **extra}, value)


LLM_SCALARS = [_tagged("engine_running", 24.0), _tagged("engine_waiting", 7.0),
               _tagged("kv_cache_usage_ratio", 0.62), _tagged("prompt_tokens_rps", 1000.0),
               _tagged("prefix_cache_hit_ratio", 0.25), _tagged("prefix_cache_hit_ratio", 0.35)]
LLM_BUCKETS = [_tagged("ttft", 10.0, le="0.5"), _tagged("ttft", 30.0, le="1.0"),
               _tagged("ttft", 30.0, le="+Inf"), _tagged("tpot", 5.0, le="+Inf")]


def _read(src: PrometheusSource, target: TargetSelector = TARGET):
    return src.read([target], 0.0, 60.0)[target.key]


def test_prometheus_source_reads_the_tagged_llm_answers(prometheus):  # noqa: F811
    prometheus["answers"] = [("trimtab_llm_running_requests", LLM_SCALARS),
                             ("trimtab_llm_time_to_first_token_seconds_bucket", LLM_BUCKETS)]
    snap = _read(PrometheusSource(prometheus["url"], unix_time=lambda: NOW_UNIX_S))
    assert (snap.engine_running, snap.engine_waiting) == (24.0, 7.0)
    assert snap.kv_cache_usage_ratio == 0.62 and snap.prompt_tokens_rps == 1000.0
    assert snap.prefix_cache_hit_ratio == 0.25          # the first of the `or` wins
    assert snap.ttft.counts == (10, 20, 0) and snap.ttft.bounds_s == (0.5, 1.0)
    assert snap.tpot.total == 5 and snap.itl is None
    assert FIELD_LLM not in snap.missing


def test_prometheus_source_llm_failed_or_empty_only_for_a_known_llm_target(prometheus):  # noqa: F811
    src = PrometheusSource(prometheus["url"], unix_time=lambda: NOW_UNIX_S)
    prometheus["answers"] = [("trimtab_llm_running_requests", "fail")]
    snap = _read(src)                  # never seen as an LLM target: a request-level server
    assert FIELD_LLM not in snap.missing and snap.engine_running is None
    prometheus["answers"] = [("trimtab_llm_running_requests", LLM_SCALARS)]
    assert FIELD_LLM not in _read(src).missing
    prometheus["answers"] = [("trimtab_llm_running_requests", "fail")]
    failed = _read(src)
    assert FIELD_LLM in failed.missing and FIELD_LLM not in failed.empty
    prometheus["answers"] = []
    empty = _read(src)                 # answered, no series: the engine's pods are gone
    assert FIELD_LLM in empty.missing and FIELD_LLM in empty.empty
    prometheus["answers"] = [("trimtab_llm_running_requests",
                              [s for s in LLM_SCALARS
                               if s["metric"][FIELD_LABEL] != "kv_cache_usage_ratio"])]
    partial = _read(src)
    assert FIELD_LLM in partial.missing and FIELD_LLM not in partial.empty
    assert partial.engine_running == 24.0


# --- a real Prometheus scraping a sidecar's re-export ------------------------------------------
class SidecarExporter:
    """An SGLang adapter re-ingesting the advancing fixture page every 0.2 s, served over
    HTTP like the sidecar's /metrics."""

    def __init__(self) -> None:
        self.adapter = ScrapeAdapter("sglang", "http://127.0.0.1:9/metrics", SGLANG_RULES,
                                     (QWEN,), CollectorHealth(), clock=lambda: 0.0)
        self.registry = CollectorRegistry()
        self.registry.register(self.adapter)
        self.port = free_port()
        self.server, _ = start_http_server(self.port, "127.0.0.1", registry=self.registry)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.adapter.ingest(page_at(0.0))
        self.thread.start()

    def _run(self) -> None:
        t_s = 0.0
        while not self.stop_event.wait(0.2):
            t_s += 0.2
            self.adapter.ingest(page_at(t_s))

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Iterator[Prometheus]:
    exporter = SidecarExporter()
    prom = Prometheus(tmp_path_factory.mktemp("llm-prom"),
                      [(exporter.port, {"namespace": "prod", "pod": "qwen-0"})])
    prom.start()
    try:
        prom.wait_for("count_over_time(trimtab_llm_prompt_tokens_total[20s]) >= 6")
        yield prom
    finally:
        prom.stop()
        exporter.stop()


def test_real_prometheus_answers_the_llm_queries(real):
    snap = PrometheusSource(real.url).read([TARGET], 0.0, 5.0)[TARGET.key]
    assert snap.engine_running == pytest.approx(24) and snap.engine_waiting == pytest.approx(7)
    assert snap.kv_cache_usage_ratio == pytest.approx(0.62)
    assert snap.prefix_cache_hit_ratio == pytest.approx(0.35)
    # 1000 tokens/s as the page advances; loose: a loaded 2-core box delays the thread
    assert 0.3 * PROMPT_TOKENS_PER_S < snap.prompt_tokens_rps < 1.5 * PROMPT_TOKENS_PER_S
    assert snap.ttft is not None and snap.ttft.total > 0
    assert snap.ttft.count_over(0.5) == 0 < snap.ttft.count_over(0.25)   # all in (0.25, 0.5]
    assert snap.preemptions_rps is None and FIELD_LLM not in snap.missing
