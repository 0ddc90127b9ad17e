"""The direct sidecar scrape source: rates from deltas between ticks, down pods left out, resets handled."""
from __future__ import annotations

import pytest

from trimtab.controllers.shell.sources.base import TargetSelector
from trimtab.controllers.shell.sources.sidecar import SidecarSource, parse_page
from tests.conftest import free_port
from tests.production.conftest import Exporter


@pytest.fixture
def pods():
    exps = [Exporter("llama"), Exporter("llama")]
    for e in exps:
        e.queue.labels("llama").set(2.0)
        e.in_flight.labels("llama").set(3.0)
    yield exps
    for e in exps:
        e.stop()


def urls(exps) -> list[str]:
    return [f"http://127.0.0.1:{e.port}/metrics" for e in exps]


TARGET = TargetSelector("prod/llama", {"model": "llama"})


def test_rates_come_from_deltas_between_two_reads(pods) -> None:
    src = SidecarSource({"prod/llama": urls(pods)})
    first = src.read([TARGET], now_s=100.0, window_s=15.0)["prod/llama"]
    assert first.arrival_rate_rps is None and "arrival_rate_rps" in first.missing   # no delta yet
    assert first.ready_replicas == 2 and first.queue_depth == 4.0
    pods[0].serve_requests(150, latency_s=0.2)
    pods[1].serve_requests(75, latency_s=0.2)
    snap = src.read([TARGET], now_s=115.0, window_s=15.0)["prod/llama"]
    assert snap.arrival_rate_rps == pytest.approx(225 / 15)
    assert snap.in_flight == 6.0 and snap.missing == frozenset()
    assert snap.latency.total == 225 and 0.1 < snap.latency.quantile(0.99) <= 0.25


def test_a_down_pod_is_left_out_and_all_down_is_all_missing(pods) -> None:
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    src = SidecarSource({"prod/llama": urls(pods[:1]) + [dead]}, timeout_s=0.5)
    snap = src.read([TARGET], 0.0, 15.0)["prod/llama"]
    assert snap.ready_replicas == 1 and src.last_errors == ["unreachable"]
    only_dead = SidecarSource({"prod/llama": [dead]}, timeout_s=0.5)
    snap = only_dead.read([TARGET], 0.0, 15.0)["prod/llama"]
    assert snap.arrival_rate_rps is None and "arrival_rate_rps" in snap.missing


def test_counter_reset_counts_the_new_value_as_the_increase() -> None:
    before = "# TYPE trimtab_requests counter\ntrimtab_requests_total{model=\"m\",outcome=\"ok\"} 500\n"
    after = "# TYPE trimtab_requests counter\ntrimtab_requests_total{model=\"m\",outcome=\"ok\"} 30\n"
    src = SidecarSource({"k": ["u"]})
    pages = iter([before, after])
    src._fetch = lambda url: next(pages)        # the restarted sidecar starts from zero
    t = TargetSelector("k", {"model": "m"})
    src.read([t], 0.0, 10.0)
    assert src.read([t], 10.0, 10.0)["k"].arrival_rate_rps == pytest.approx(3.0)


def test_parse_page_filters_by_model() -> None:
    text = ('# TYPE trimtab_queue_depth gauge\n'
            'trimtab_queue_depth{model="a"} 3\ntrimtab_queue_depth{model="b"} 5\n')
    assert parse_page(text, "a").queue == 3.0
    assert parse_page(text, None).queue == 8.0
