"""The sidecar against a real tritonserver 2.51.0: its adapter, batch reloads and a live loop.

One server (tests/support/triton_real.py, `make triton`) serves a repository of our own Python
backend models for the whole module; each test uses its own models, so counts start at zero.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from trimtab.collectors.adapter_rules import TRITON_RULES, triton_stats_fetcher
from trimtab.collectors.adapters import ScrapeAdapter
from trimtab.collectors.health import CollectorHealth
from trimtab.collectors.settings import ControlSettings
from trimtab.collectors.sidecar import Sidecar
from trimtab.collectors.triton_control import TritonBatchApplier
from trimtab.controllers.shell.actuators.sidecar import SidecarControlClient
from tests.collectors.support import make_config
from tests.support.triton_real import (Triton, infer_body, raw_sample, running_triton,
                                       write_repository)

pytestmark = pytest.mark.triton

AUTH = {"Authorization": "Bearer s3cret"}
MODELS = {
    "adapted": {"sleep_s": 0.05, "max_queue_delay_us": 20_000},   # batches concurrent requests
    "unlisted": {},
    "control": {"instances": 2},
    "nobatch": {"max_batch_size": 0},
    "loop": {"sleep_s": 0.1, "max_queue_delay_us": 50_000},
}


@pytest.fixture(scope="module")
def triton(tmp_path_factory) -> Triton:
    root = tmp_path_factory.mktemp("triton")
    repo = write_repository(root / "repo", MODELS)
    yield from running_triton(repo, tuple(MODELS), root / "tritonserver.log")


def run(coro, timeout_s: float = 120):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


async def infer_many(base: str, model: str, rows: list[list[float]]) -> list[int]:
    """One single-row request per row, all at once; their HTTP statuses."""
    async with aiohttp.ClientSession() as s:
        async def one(row):
            async with s.post(f"{base}/v2/models/{model}/infer", json=infer_body([row])) as r:
                await r.read()
                return r.status
        return list(await asyncio.gather(*(one(row) for row in rows)))


def test_the_adapter_maps_the_real_metrics_and_statistics(triton):
    assert run(infer_many(triton.url, "adapted", [[1, 2, 3, 4]] * 16)) == [200] * 16
    for _ in range(2):                          # each alone: a failure fails its batch-mates
        assert triton.post_json("/v2/models/adapted/infer", infer_body([[-1, 0, 0, 0]]))[0] == 500
    # an error answer from the model is counted as a success by Triton: not seen as an error
    status, answer = triton.post_json("/v2/models/adapted/infer", infer_body([[-1000, 0, 0, 0]]))
    assert status == 500 and "-1000" in answer["error"]
    assert run(infer_many(triton.url, "unlisted", [[0, 0, 0, 0]] * 3)) == [200] * 3
    run(executions_since(triton, "adapted", {}, 19))    # every row executed, failed or not
    stats = triton.get_json("/v2/models/adapted/stats")["model_stats"][0]
    text = triton.metrics_text()

    async def scrape():
        health = CollectorHealth()
        adapter = ScrapeAdapter("triton", triton.metrics_url, TRITON_RULES, ("adapted",), health,
                                extra=triton_stats_fetcher(triton.url, ("adapted",)))
        reg = CollectorRegistry()
        reg.register(health)
        reg.register(adapter)
        async with aiohttp.ClientSession() as session:
            adapter._session = session
            assert await adapter.scrape_once(), health.errors("triton")
        return reg
    reg = run(scrape())

    def v(name, **labels):
        return reg.get_sample_value(name, labels)

    assert v("trimtab_collector_success", collector="triton") == 1
    assert v("trimtab_requests_total", model="adapted", outcome="ok") == 17     # 16 + the -1000
    assert v("trimtab_requests_total", model="adapted", outcome="error") == 2   # BACKEND
    assert v("trimtab_requests_total", model="other", outcome="ok") == 3         # unlisted
    assert v("trimtab_queue_depth", model="adapted") == 0
    assert v("trimtab_inferences_total", model="adapted") == stats["inference_count"] == 17  # successes only
    executions = stats["execution_count"]
    assert v("trimtab_executions_total", model="adapted") == executions
    assert executions < 17                      # dynamic batching gathered the requests
    # Triton's microseconds become seconds
    request_us = raw_sample(text, "nv_inference_request_duration_us", "adapted")
    assert v("trimtab_upstream_request_duration_seconds_total", model="adapted",
             phase="request") == pytest.approx(request_us * 1e-6)
    assert request_us * 1e-6 >= 0.05            # at least one execution's sleep
    # the statistics API's executions per batch size: an exact histogram
    per_size = {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}
    assert max(per_size) > 1
    assert v("trimtab_batch_size_count", model="adapted") == executions == sum(per_size.values())
    assert v("trimtab_batch_size_sum", model="adapted") == 19      # failed executions too
    assert v("trimtab_batch_size_bucket", model="adapted", le="1.0") == per_size.get(1, 0)


def test_batch_settings_reach_the_real_server_through_a_load_with_a_config_override(triton):
    async def scenario():
        applier = TritonBatchApplier(triton.url, ("control", "nobatch", "missing"),
                                     CollectorRegistry(), min_interval_s=0)
        await applier.start()
        try:
            settings = ControlSettings(max_batch_size=4, batch_timeout_ms=2.5)
            return [await applier.apply_model(m, settings)
                    for m in ("control", "nobatch", "missing")], applier.last_error
        finally:
            await applier.close()

    before = triton.get_json("/v2/models/control/config")
    assert before["max_batch_size"] == 8
    results, last_error = run(scenario())
    assert results == ["ok", "unsupported", "error"]
    assert "missing" in last_error and "404" in last_error    # unknown model
    after = triton.get_json("/v2/models/control/config")
    assert after["max_batch_size"] == 4
    assert after["dynamic_batching"]["max_queue_delay_microseconds"] == 2500
    assert after["instance_group"][0]["count"] == 2                     # the rest kept
    assert after["parameters"] == before["parameters"]
    assert triton.get_json("/v2/models/nobatch/config")["max_batch_size"] == 0
    # the server enforces the new maximum
    assert triton.post_json("/v2/models/control/infer", infer_body([[1, 1, 1, 1]] * 4))[0] == 200
    status, answer = triton.post_json("/v2/models/control/infer", infer_body([[1, 1, 1, 1]] * 5))
    assert status == 400 and "batch-size must be <= 4" in answer["error"]
    ready = {m["name"]: m["state"] for m in
             triton.post_json("/v2/repository/index", {"ready": True})[1]}
    assert ready.get("control") == "READY"


def executions_by_size(triton: Triton, model: str) -> dict[int, int]:
    stats = triton.get_json(f"/v2/models/{model}/stats")["model_stats"][0]
    return {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}


async def executions_since(triton: Triton, model: str, before: dict[int, int],
                           rows: int) -> dict[int, int]:
    """Executions per batch size since ``before``, once they cover ``rows`` rows: Triton
    updates its statistics just after it answers, so the last answer can come first."""
    for _ in range(100):
        after = executions_by_size(triton, model)
        new = {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0)}
        if sum(size * n for size, n in new.items()) >= rows:
            break
        await asyncio.sleep(0.05)
    return new


def test_live_loop_concurrency_limit_and_max_batch_size_change_the_real_server(triton):
    """The sidecar's proxy in front of Triton; the settings changed by the controller's own
    control client; the server's own statistics show what each setting did."""
    rows = [[float(i), 0, 0, 0] for i in range(12)]

    async def scenario():
        sc = Sidecar(make_config(
            upstream=triton.url, proxy=True, adapter="triton", adapter_interval_s=0.2,
            adapter_metrics_url=triton.metrics_url, models=("loop",),
            triton_model_control=True, triton_apply_min_interval_s=0,
            initial={"concurrency_limit": 1, "max_batch_size": 8},
            limits={"max_queue_length": 64, "queue_timeout_s": 60, "upstream_timeout_s": 60}))
        await sc.start()
        proxy = f"http://127.0.0.1:{sc.proxy_port}"
        control = f"http://127.0.0.1:{sc.metrics_port}/control/v1/settings"
        try:
            # 1. one request at a time into Triton: every execution is a batch of one
            before = executions_by_size(triton, "loop")
            assert await infer_many(proxy, "loop", rows) == [200] * 12
            serial = await executions_since(triton, "loop", before, 12)
            # 2. the controller lets 12 in at once and caps batches at 4 (a model reload),
            # through its own control client (what SidecarActuator and GateActuator call; it
            # is synchronous, so it runs in a thread while this loop serves the sidecar)
            knobs = SidecarControlClient(control.removesuffix("/control/v1/settings"),
                                         AUTH["Authorization"].removeprefix("Bearer "))
            await asyncio.to_thread(knobs.update, {"concurrency_limit": 12,
                                                   "max_batch_size": 4,
                                                   "batch_timeout_ms": 50})
            held = await asyncio.to_thread(knobs.settings)
            assert (held["concurrency_limit"], held["max_batch_size"]) == (12, 4), held
            await sc.triton.wait_idle()
            config = triton.get_json("/v2/models/loop/config")
            before = executions_by_size(triton, "loop")
            assert await infer_many(proxy, "loop", rows) == [200] * 12
            batched = await executions_since(triton, "loop", before, 12)
            for _ in range(50):                     # the adapter's next scrape
                await asyncio.sleep(0.1)
                if sc.registry.get_sample_value("trimtab_batch_size_count",
                                                {"model": "loop"}) == sum(batched.values()):
                    break
            seen = sc.registry.get_sample_value("trimtab_batch_size_count", {"model": "loop"})
            applies = sc.registry.get_sample_value("trimtab_triton_config_applies_total",
                                                   {"model": "loop", "result": "ok"})
            return serial, config, batched, seen, applies
        finally:
            await sc.stop()

    serial, config, batched, seen, applies = run(scenario())
    assert serial == {1: 12}
    assert applies == 1
    assert config["max_batch_size"] == 4
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 50_000
    assert sum(size * n for size, n in batched.items()) == 12
    assert max(batched) == 4 and sum(batched.values()) < 12      # gathered, never above 4
    assert seen == sum(batched.values())      # stats reset on reload: the sidecar sees them
