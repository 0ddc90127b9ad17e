"""Control API: bearer auth, validation naming the field, applied at once; Triton batch reloads."""
from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from trimtab.collectors.settings import ControlSettings
from trimtab.collectors.sidecar import Sidecar
from trimtab.collectors.triton_control import TritonBatchApplier, with_batch_settings
from tests.collectors.support import load_json_fixture, make_config, serve
from tests.collectors.triton_standin import TRITON_CONFIG, triton_standin

AUTH = {"Authorization": "Bearer s3cret"}


@contextlib.asynccontextmanager
async def admin(**cfg):
    sc = Sidecar(make_config(proxy=False, **cfg))
    await sc.start()
    try:
        async with aiohttp.ClientSession() as s:
            yield sc, s, f"http://127.0.0.1:{sc.metrics_port}/control/v1/settings"
    finally:
        await sc.stop()


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 30))


def count(sc, result):
    return sc.registry.get_sample_value("trimtab_control_requests_total", {"result": result})


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic s3cret"},
                                     {"Authorization": "Bearer s3cret-and-more"}],
                         ids=["none", "wrong", "basic", "prefix"])
def test_unauthorised_requests_get_401_and_change_nothing(headers, caplog):
    async def scenario():
        async with admin() as (sc, s, url):
            async with s.put(url, json={"concurrency_limit": 99}, headers=headers) as r:
                assert r.status == 401
                assert (await r.json())["field"] == "Authorization"
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
            async with s.get(url, headers=headers) as r:
                assert r.status == 401
            assert sc.control.settings.concurrency_limit == 4
            assert count(sc, "unauthorized") == 2
    with caplog.at_level("WARNING"):
        run(scenario())
    # Issue 18: failed authentication was counted but never logged; now one line per 10 s.
    failed = [r.getMessage() for r in caplog.records if "failed authentication" in r.getMessage()]
    assert len(failed) == 1 and "127.0.0.1" in failed[0] and "s3cret" not in failed[0]


def test_put_applies_to_the_proxy_at_once_and_returns_full_settings():
    async def scenario():
        async with admin() as (sc, s, url):
            async with s.put(url, json={"concurrency_limit": 12}, headers=AUTH) as r:
                assert r.status == 200
                assert await r.json() == {"concurrency_limit": 12, "max_batch_size": 8,
                                          "batch_timeout_ms": 5.0,
                                          "queue_timeout_s": sc.config.limits.queue_timeout_s}
            assert sc.admission.limit == 12
            assert sc.registry.get_sample_value("trimtab_concurrency_limit") == 12
            async with s.put(url, json={"max_batch_size": 16, "batch_timeout_ms": 2.5},
                             headers=AUTH) as r:
                assert (await r.json())["concurrency_limit"] == 12        # kept
            assert sc.registry.get_sample_value("trimtab_batch_timeout_seconds",
                                                {"model": "m1"}) == 0.0025
            async with s.get(url, headers=AUTH) as r:
                assert (await r.json())["max_batch_size"] == 16
            assert count(sc, "ok") == 2
    run(scenario())


def test_the_admission_wait_in_force_is_a_gauge():
    async def scenario():
        async with admin() as (sc, s, url):
            started_s = sc.config.limits.queue_timeout_s
            assert sc.registry.get_sample_value("trimtab_queue_timeout_seconds") == started_s
            async with s.put(url, json={"queue_timeout_s": 0.25}, headers=AUTH) as r:
                assert r.status == 200
            assert sc.admission.queue_timeout_s == 0.25
            assert sc.registry.get_sample_value("trimtab_queue_timeout_seconds") == 0.25
            async with s.put(url, json={"queue_timeout_s": 0}, headers=AUTH) as r:
                assert r.status == 400                       # refused: the gauge keeps 0.25
            assert sc.registry.get_sample_value("trimtab_queue_timeout_seconds") == 0.25
    run(scenario())


def test_a_null_queue_timeout_goes_back_to_the_wait_as_started():
    """Issue 18 (5): null was reported in GET while the proxy and the gauge kept the last number."""
    async def scenario():
        async with admin() as (sc, s, url):
            started_s = sc.config.limits.queue_timeout_s
            async with s.put(url, json={"queue_timeout_s": 0.125}, headers=AUTH) as r:
                assert r.status == 200
            assert sc.admission.queue_timeout_s == 0.125
            async with s.put(url, json={"queue_timeout_s": None}, headers=AUTH) as r:
                assert r.status == 200
                assert (await r.json())["queue_timeout_s"] == started_s
            assert sc.admission.queue_timeout_s == started_s != 0.125
            assert sc.registry.get_sample_value("trimtab_queue_timeout_seconds") == started_s
            async with s.get(url, headers=AUTH) as r:
                assert (await r.json())["queue_timeout_s"] == started_s
    run(scenario())


INVALID = {
    "zero-limit": ({"concurrency_limit": 0}, "concurrency_limit"),
    "float-limit": ({"concurrency_limit": 2.5}, "concurrency_limit"),
    "bool-batch": ({"max_batch_size": True}, "max_batch_size"),
    "string-timeout": ({"batch_timeout_ms": "5"}, "batch_timeout_ms"),
    "negative-timeout": ({"batch_timeout_ms": -1}, "batch_timeout_ms"),
    "zero-queue-timeout": ({"queue_timeout_s": 0}, "queue_timeout_s"),
    "string-queue-timeout": ({"queue_timeout_s": "0.5"}, "queue_timeout_s"),
    "string-limit": ({"concurrency_limit": "4"}, "concurrency_limit"),        # issue 18 (11)
    "padded-string-batch": ({"max_batch_size": " 7 "}, "max_batch_size"),
    "unknown-field": ({"replicas": 3}, "replicas"),
    "empty": ({}, "body"),
    "list": ([1, 2], "body"),
}


@pytest.mark.parametrize("body,field", INVALID.values(), ids=INVALID.keys())
def test_invalid_changes_get_400_naming_the_field(body, field):
    async def scenario():
        async with admin() as (sc, s, url):
            async with s.put(url, json=body, headers=AUTH) as r:
                assert r.status == 400
                answer = await r.json()
            assert answer["field"] == field and answer["error"]
            assert sc.control.settings == ControlSettings(
                concurrency_limit=4, queue_timeout_s=sc.config.limits.queue_timeout_s)
            assert count(sc, "invalid") == 1
    run(scenario())


def test_not_json_is_400():
    async def scenario():
        async with admin() as (sc, s, url):
            async with s.put(url, data=b"{nope", headers=AUTH) as r:
                assert r.status == 400 and (await r.json())["field"] == "body"
    run(scenario())


def test_without_a_token_the_api_is_read_only():
    async def scenario():
        async with admin(control_token=None) as (sc, s, url):
            async with s.get(url) as r:
                assert r.status == 200
            async with s.put(url, json={"concurrency_limit": 2}) as r:
                assert r.status == 403
    run(scenario())


def test_health_endpoints():
    async def scenario():
        async with serve(triton_standin({})) as up:
            async with admin(upstream=up, adapter="triton") as (sc, s, url):
                base = url.rsplit("/control", 1)[0]
                async with s.get(base + "/healthz") as r:
                    assert r.status == 200
                async with s.get(base + "/readyz") as r:
                    assert r.status == 200 and "/v2/health/ready" in await r.text()
        async with admin(upstream="http://127.0.0.1:9") as (sc, s, url):
            async with s.get(url.rsplit("/control", 1)[0] + "/readyz") as r:
                assert r.status == 503 and "unreachable" in await r.text()
    run(scenario())


# --- Triton -------------------------------------------------------------------------------------
def test_with_batch_settings_changes_only_batching():
    config = load_json_fixture(TRITON_CONFIG)              # recorded from Triton 2.51.0
    assert config["dynamic_batching"]["preferred_batch_size"] == [8]  # Triton filled it in
    new = with_batch_settings(config, ControlSettings(max_batch_size=4, batch_timeout_ms=2.5))
    assert new["max_batch_size"] == 4
    assert new["dynamic_batching"]["max_queue_delay_microseconds"] == 2500
    assert new["dynamic_batching"]["preferred_batch_size"] == []      # 8 > 4 dropped
    kept = dict(config, dynamic_batching={**config["dynamic_batching"],
                                          "preferred_batch_size": [4, 8]})
    assert with_batch_settings(kept, ControlSettings(max_batch_size=4))[
        "dynamic_batching"]["preferred_batch_size"] == [4]
    assert {k: v for k, v in new.items() if k not in ("max_batch_size", "dynamic_batching")} == {
        k: v for k, v in config.items() if k not in ("max_batch_size", "dynamic_batching")}
    assert with_batch_settings({"max_batch_size": 0}, ControlSettings()) is None


def test_control_api_reloads_triton_with_a_config_override():
    async def scenario():
        state: dict = {}
        async with serve(triton_standin(state)) as up:
            async with admin(upstream=up, models=("scale", "nobatch"),
                             triton_model_control=True) as (sc, s, url):
                async with s.put(url, json={"max_batch_size": 4, "batch_timeout_ms": 1},
                                 headers=AUTH) as r:
                    assert r.status == 200
                await sc.triton.wait_idle()
                assert [name for name, _ in state["loads"]] == ["scale"]
                stored = state["configs"]["scale"]
                assert stored["max_batch_size"] == 4
                assert stored["dynamic_batching"]["max_queue_delay_microseconds"] == 1000
                assert stored["input"][0]["dims"] == [4]                  # rest untouched
                val = sc.registry.get_sample_value
                assert val("trimtab_triton_config_applies_total",
                           {"model": "scale", "result": "ok"}) == 1
                assert val("trimtab_triton_config_applies_total",
                           {"model": "nobatch", "result": "unsupported"}) == 1
    run(scenario())


def test_triton_applies_are_rate_limited_and_coalesced():
    async def scenario():
        state: dict = {}
        now = [0.0]
        async with serve(triton_standin(state)) as up:
            applier = TritonBatchApplier(up, ("scale",), CollectorRegistry(),
                                         min_interval_s=1.0, clock=lambda: now[0])
            await applier.start()
            try:
                applier.request(ControlSettings(max_batch_size=2))
                await applier.wait_idle()
                for size in (3, 4, 5):                  # three changes inside the interval
                    applier.request(ControlSettings(max_batch_size=size))
                await asyncio.sleep(0.05)
                assert len(state["loads"]) == 1         # held back by the rate limit
                now[0] = 1.0
                await applier.wait_idle()
            finally:
                await applier.close()
            sizes = [json.loads(cfg)["max_batch_size"] for _, cfg in state["loads"]]
            assert sizes == [2, 5]                      # the newest settings win
    run(scenario())


def test_triton_errors_are_counted_not_raised():
    async def scenario():
        async with serve(triton_standin({})) as up:
            applier = TritonBatchApplier(up, ("missing",), CollectorRegistry(), min_interval_s=0)
            await applier.start()
            try:
                assert await applier.apply_model("missing", ControlSettings()) == "error"
                assert "404" in applier.last_error       # as the real Triton answers
            finally:
                await applier.close()
    run(scenario())
