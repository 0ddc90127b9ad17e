"""The Prometheus source against a real Prometheus on loopback scraping sidecar-shaped exporters."""
from __future__ import annotations

import math
import threading
import time
from typing import Iterator

import pytest

from trimtab.controllers.shell.sources.base import TargetSelector
from trimtab.controllers.shell.sources.prometheus import PrometheusSource, SourceUnavailable, queries_for
from tests.conftest import free_port
from tests.production.conftest import Exporter, Prometheus

RATE_PER_POD_RPS = 20.0


class Traffic:
    """Steady synthetic traffic into exporters (20 req/s per pod) until stopped."""

    def __init__(self, exporters: list[Exporter]) -> None:
        self.exporters = exporters
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            for e in self.exporters:
                e.serve_requests(int(RATE_PER_POD_RPS * 0.1), latency_s=0.04)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("prom")
    exps = {"p1": Exporter("llama"), "p2": Exporter("llama"), "p3": Exporter("mistral"),
            "p4": Exporter("qwen")}
    for e in exps.values():
        e.queue.labels(e.model).set(3.0)
        e.in_flight.labels(e.model).set(5.0)
    prom = Prometheus(tmp, [(e.port, {"namespace": "prod", "pod": pod})
                            for pod, e in exps.items()])
    traffic = Traffic(list(exps.values()))
    prom.start()
    try:
        prom.wait_for('count(count_over_time(trimtab_requests_total[10s]) >= 9) >= 4')
        yield {"prom": prom, "exporters": exps}
    finally:
        traffic.stop.set()
        prom.stop()
        for e in exps.values():
            e.stop()


def sel(model: str) -> TargetSelector:
    return TargetSelector(f"prod/{model}", {"namespace": "prod", "model": model})


def test_reads_rates_depths_latency_and_replicas(fleet) -> None:
    src = PrometheusSource(fleet["prom"].url, staleness_s=30)
    snaps = src.read([sel("llama"), sel("mistral"), sel("absent")], now_s=0.0, window_s=10.0)
    llama = snaps["prod/llama"]
    # 2 pods x 20 req/s; loose because a loaded 2-core CI box delays the traffic thread.
    assert 0.4 * 2 * RATE_PER_POD_RPS < llama.arrival_rate_rps < 1.3 * 2 * RATE_PER_POD_RPS
    assert llama.completion_rate_rps == pytest.approx(llama.arrival_rate_rps)
    assert llama.ready_replicas == 2
    assert llama.queue_depth == pytest.approx(6.0) and llama.in_flight == pytest.approx(10.0)
    assert llama.latency is not None and llama.latency.total > 0
    assert 0.025 < llama.latency.quantile(0.5) <= 0.05       # every request took 40 ms
    assert llama.missing == frozenset() and llama.stale == frozenset()
    assert snaps["prod/mistral"].ready_replicas == 1
    absent = snaps["prod/absent"]
    assert absent.arrival_rate_rps is None and "arrival_rate_rps" in absent.missing


def test_queries_are_batched_whatever_the_target_count(fleet) -> None:
    src = PrometheusSource(fleet["prom"].url)
    few = [sel("llama"), sel("mistral")]
    many = few + [sel(f"m{i}") for i in range(300)]
    src.read(few, 0.0, 10.0)
    per_read_few = src.requests_made
    src.read(many, 0.0, 10.0)
    assert src.requests_made - per_read_few == per_read_few == len(queries_for(("a",), "", 10))
    # A second label-key set is a second group: twice the queries, still independent of count.
    src.requests_made = 0
    src.read(many + [TargetSelector("x/y", {"job": "other"})], 0.0, 10.0)
    assert src.requests_made == 2 * per_read_few


def test_nan_gauge_makes_that_field_missing_not_zero(fleet) -> None:
    e = fleet["exporters"]["p4"]
    e.queue.labels("qwen").set(math.nan)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            snap = PrometheusSource(fleet["prom"].url).read([sel("qwen")], 0.0, 3.0)["prod/qwen"]
            if "queue_depth" in snap.missing:
                break
            time.sleep(0.5)
        assert snap.queue_depth is None and "queue_depth" in snap.missing
        assert snap.arrival_rate_rps is not None          # the rest is still read
    finally:
        e.queue.labels("qwen").set(3.0)


def test_old_samples_are_stale(fleet) -> None:
    # Evaluate "now" as if five minutes had passed with no new samples: the newest is too old.
    late = PrometheusSource(fleet["prom"].url, staleness_s=60,
                            unix_time=lambda: time.time() + 120)
    snap = late.read([sel("llama")], 0.0, 300.0)["prod/llama"]
    assert "arrival_rate_rps" in snap.stale


def test_unreachable_prometheus_raises_source_unavailable() -> None:
    src = PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
    with pytest.raises(SourceUnavailable):
        src.read([sel("llama")], 0.0, 10.0)


def test_matcher_values_are_escaped(fleet) -> None:
    src = PrometheusSource(fleet["prom"].url)
    snaps = src.read([TargetSelector("weird", {"namespace": 'a"b|.*', "model": "x\\y"})],
                     0.0, 10.0)
    assert src.last_errors == []                    # the query parsed
    assert snaps["weird"].arrival_rate_rps is None  # and matched nothing (no regex injection)
