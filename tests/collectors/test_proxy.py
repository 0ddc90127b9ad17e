"""The admission proxy in front of a loopback upstream: forwarding, overload, bad input, streaming."""
from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from trimtab.collectors.proxy import model_from_request
from trimtab.collectors.sidecar import Sidecar
from trimtab.common.ports import free_port
from tests.collectors.support import (  # noqa: F401 (event_loop_kind: autouse fixture)
    event_loop_kind, make_config, run_on_loop, serve, upstream_app)


@contextlib.asynccontextmanager
async def proxied(state: dict | None = None, upstream: str | None = None, **cfg):
    """(sidecar, proxy URL) in front of the misbehaving upstream stand-in."""
    state = state if state is not None else {}
    async with serve(upstream_app(state)) as up:
        sc = Sidecar(make_config(upstream=upstream or up, **cfg))
        await sc.start()
        try:
            yield sc, f"http://127.0.0.1:{sc.proxy_port}"
        finally:
            state["release"].set()
            state.setdefault("sse_go", asyncio.Event()).set()
            await sc.stop()


def v(sc: Sidecar, name: str, **labels) -> float | None:
    return sc.registry.get_sample_value(name, labels)


def run(coro):
    run_on_loop(coro, 30)


async def until(condition, timeout_s: float = 10.0) -> None:
    """Wait for a condition on a loaded machine instead of guessing a sleep."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_forwards_body_and_headers_and_counts():
    async def scenario():
        async with proxied() as (sc, url), aiohttp.ClientSession() as s:
            async with s.post(url + "/echo?x=1", data=b"a" * 1000,
                              headers={"X-Req": "42", "Connection": "keep-alive"}) as r:
                assert r.status == 200
                body = await r.json()
            assert body["path"] == "/echo?x=1" and body["len"] == 1000
            assert body["headers"]["X-Req"] == "42"
            assert body["headers"]["X-Forwarded-For"] == "127.0.0.1"
            assert v(sc, "trimtab_requests_total", model="m1", outcome="ok") == 1
            assert v(sc, "trimtab_request_duration_seconds_count", model="m1") == 1
            assert v(sc, "trimtab_queue_duration_seconds_count", model="m1") == 1
            assert v(sc, "trimtab_in_flight_requests", model="m1") == 0
            # the SLO threshold is a bucket bound
            assert v(sc, "trimtab_request_duration_seconds_bucket", model="m1", le="0.3") == 1
    run(scenario())


@pytest.mark.parametrize("path,body,model", [
    ("/v2/models/m2/infer", b"{}", "m2"),
    ("/v2/models/unknown/infer", b"{}", "other"),
    ("/v1/completions", b'{"model": "m2", "prompt": "hi"}', "m2"),
    ("/v1/completions", b'{"model": "gpt-x"}', "other"),
    ("/v1/completions", b'{"prompt": "no model"}', "m1"),
    ("/v1/completions", b'{"model": ', "m1"),               # broken JSON: default, not a crash
    ("/echo", b"", "m1"),
    # issue 18 (6): 200,000 nested brackets made json.loads raise RecursionError (a 500)
    ("/v1/completions", b'{"model": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "m1"),
], ids=["triton-path", "triton-unknown", "openai", "openai-unknown", "no-model", "bad-json",
        "plain", "deeply-nested"])
def test_model_label_is_bounded(path, body, model):
    assert model_from_request(path, body, frozenset({"m1", "m2"}), "m1") == model


def test_overload_sheds_with_503_and_retry_after_while_limit_holds():
    async def scenario():
        state: dict = {}
        async with proxied(state, initial={"concurrency_limit": 2},
                           limits={"max_queue_length": 2, "queue_timeout_s": 10}) as (sc, url):
            async with aiohttp.ClientSession() as s:
                async def call():
                    async with s.post(url + "/hold") as r:
                        return r.status, r.headers.get("Retry-After")
                tasks = [asyncio.create_task(call()) for _ in range(6)]
                for _ in range(250):
                    await asyncio.sleep(0.02)
                    if (v(sc, "trimtab_proxy_rejected_requests_total", model="m1",
                          reason="queue_full") == 2 and state["concurrent"] == 2
                            and v(sc, "trimtab_queue_depth", model="m1") == 2):
                        break
                assert state["concurrent"] == 2
                assert v(sc, "trimtab_queue_depth", model="m1") == 2
                assert v(sc, "trimtab_in_flight_requests", model="m1") == 2
                state["release"].set()
                results = await asyncio.gather(*tasks)
            assert sorted(results) == [(200, None)] * 4 + [(503, "1")] * 2
            assert state["max_concurrent"] == 2
            assert v(sc, "trimtab_requests_total", model="m1", outcome="shed") == 2
            assert v(sc, "trimtab_requests_total", model="m1", outcome="ok") == 4
            assert v(sc, "trimtab_queue_depth", model="m1") == 0
    run(scenario())


def test_queue_timeout_answers_503_and_counts():
    async def scenario():
        async with proxied(initial={"concurrency_limit": 1},
                           limits={"queue_timeout_s": 0.2}) as (sc, url):
            async with aiohttp.ClientSession() as s:
                holder = asyncio.create_task(s.post(url + "/hold"))
                await until(lambda: sc.admission.in_flight == 1)
                async with s.get(url + "/echo") as r:
                    assert r.status == 503 and r.headers["Retry-After"] == "1"
                    assert "not admitted within 0.2 s" in (await r.json())["error"]
                holder.cancel()
            assert v(sc, "trimtab_requests_total", model="m1", outcome="timeout") == 1
            assert v(sc, "trimtab_proxy_rejected_requests_total", model="m1",
                     reason="queue_timeout") == 1
    run(scenario())


def test_queue_timeout_set_through_the_control_api_applies_to_new_waiters():
    """The controller shortens the wait to what can still meet the SLO: late ones shed fast."""
    async def scenario():
        async with proxied(initial={"concurrency_limit": 1},
                           limits={"queue_timeout_s": 10}) as (sc, url):
            await sc.control.update({"queue_timeout_s": 0.2})
            assert sc.admission.queue_timeout_s == 0.2
            assert sc.control.settings.queue_timeout_s == 0.2
            async with aiohttp.ClientSession() as s:
                holder = asyncio.create_task(s.post(url + "/hold"))
                await until(lambda: sc.admission.in_flight == 1)
                t0 = asyncio.get_running_loop().time()
                async with s.get(url + "/echo") as r:
                    assert r.status == 503
                    assert "not admitted within 0.2 s" in (await r.json())["error"]
                assert asyncio.get_running_loop().time() - t0 < 5.0    # not the old 10 s
                holder.cancel()
            assert v(sc, "trimtab_proxy_rejected_requests_total", model="m1",
                     reason="queue_timeout") == 1
    run(scenario())


def test_client_gone_while_queued_frees_its_place():
    async def scenario():
        state: dict = {}
        async with proxied(state, initial={"concurrency_limit": 1},
                           limits={"max_queue_length": 1, "queue_timeout_s": 10}) as (sc, url):
            async with aiohttp.ClientSession() as s:
                holder = asyncio.create_task(s.post(url + "/hold"))
                await until(lambda: sc.admission.in_flight == 1)
                waiter = asyncio.create_task(s.get(url + "/echo"))
                await until(lambda: sc.admission.queued == 1)
                waiter.cancel()                      # the client disconnects
                await until(lambda: sc.admission.queued == 0)
                state["release"].set()
                async with await holder as r:
                    assert r.status == 200
    run(scenario())


@pytest.mark.parametrize("kind,status,reason", [
    ("header", 431, "header_too_large"),
    ("body-length", 413, "body_too_large"),
    ("body-chunked", 413, "body_too_large"),
], ids=str)
def test_oversized_requests_rejected_and_counted(kind, status, reason):
    async def scenario():
        async with proxied(limits={"max_body_bytes": 1024, "max_header_bytes": 2048}) as (sc, url):
            async with aiohttp.ClientSession() as s:
                if kind == "header":
                    req = s.get(url + "/echo", headers={"X-Big": "x" * 3000})
                elif kind == "body-length":
                    req = s.post(url + "/echo", data=b"x" * 2048)
                else:
                    async def gen():
                        for _ in range(4):
                            yield b"x" * 512
                    req = s.post(url + "/echo", data=gen())
                async with req as r:
                    assert r.status == status
                    assert "limit" in (await r.json())["error"] or "exceeds" in (await r.json())["error"]
                async with s.get(url + "/echo") as r:          # the proxy still serves
                    assert r.status == 200
            assert v(sc, "trimtab_proxy_rejected_requests_total", model="m1", reason=reason) == 1
    run(scenario())


@pytest.mark.parametrize("case,status", [("down", 502), ("hang", 504), ("reset", 502),
                                         ("status500", 500)], ids=str)
def test_upstream_failures_answered_and_counted(case, status):
    async def scenario():
        upstream = f"http://127.0.0.1:{free_port()}" if case == "down" else None
        async with proxied(upstream=upstream, limits={"upstream_timeout_s": 0.3}) as (sc, url):
            path = {"down": "/echo", "hang": "/hang", "reset": "/reset", "status500": "/fail"}[case]
            async with aiohttp.ClientSession() as s:
                async with s.get(url + path) as r:
                    assert r.status == status
            outcome = "error" if case == "status500" else "upstream_error"
            assert v(sc, "trimtab_requests_total", model="m1", outcome=outcome) == 1
            assert v(sc, "trimtab_in_flight_requests", model="m1") == 0
            assert sc.admission.in_flight == 0                  # the slot came back
    run(scenario())


def test_sse_streamed_unbuffered_with_ttfb():
    async def scenario():
        state: dict = {"sse_go": asyncio.Event()}
        async with proxied(state) as (sc, url), aiohttp.ClientSession() as s:
            async with s.get(url + "/sse") as r:
                assert r.headers["Content-Type"] == "text/event-stream"
                first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
                # the upstream has not sent the second event yet: nothing was buffered
                assert first == b"data: first\n\n"
                assert v(sc, "trimtab_time_to_first_byte_seconds_count", model="m1") == 1
                assert v(sc, "trimtab_requests_total", model="m1", outcome="ok") == 0
                state["sse_go"].set()
                assert await r.content.read() == b"data: second\n\n"
            await until(lambda: v(sc, "trimtab_requests_total", model="m1", outcome="ok") == 1)
    run(scenario())


def test_streamed_tokens_timed_by_the_proxy():
    """Behind a server that exports no TTFT or ITL, the proxy times the SSE events it forwards:
    one first token after about 0.2 s, four gaps summing to about 0.15 s (the last two events
    arrived in one write and share their gap), [DONE] no token."""
    async def scenario():
        async with proxied() as (sc, url), aiohttp.ClientSession() as s:
            async with s.get(url + "/echo") as r:        # a plain answer: no LLM series
                await r.read()
            assert v(sc, "trimtab_llm_time_to_first_token_seconds_count", model="m1") is None
            async with s.get(url + "/tokens") as r:
                assert (await r.read()).endswith(b"data: [DONE]\n\n")
            ttft = "trimtab_llm_time_to_first_token_seconds"
            itl = "trimtab_llm_inter_token_latency_seconds"
            assert v(sc, ttft + "_count", model="m1") == 1
            assert 0.19 <= v(sc, ttft + "_sum", model="m1") < 1.0
            assert v(sc, itl + "_count", model="m1") == 4
            assert 0.14 <= v(sc, itl + "_sum", model="m1") < 1.0
    run(scenario())


def test_no_proxy_timing_where_the_engine_exports_its_own():
    from prometheus_client import CollectorRegistry

    from trimtab.collectors.proxy_metrics import ProxyMetrics
    from trimtab.collectors.sse import ENGINE_TIMED

    assert {"vllm", "sglang"} <= ENGINE_TIMED and "triton" not in ENGINE_TIMED
    off = ProxyMetrics(CollectorRegistry(), ("m1",), (0.1, 1.0), sse_timing=False)
    assert off.by_model["m1"].sse() is None
    on = ProxyMetrics(CollectorRegistry(), ("m1",), (0.1, 1.0), sse_timing=True)
    assert on.by_model["m1"].sse() is not None


def test_slow_body_cut_off_with_408_without_stalling_others():
    async def scenario():
        async with proxied(limits={"body_timeout_s": 0.3}) as (sc, url):
            port = sc.proxy_port
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
            await writer.drain()
            async with aiohttp.ClientSession() as s, s.get(url + "/echo") as r:
                assert r.status == 200                      # others are served meanwhile
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 408")
            writer.close()
            assert v(sc, "trimtab_proxy_rejected_requests_total", model="m1",
                     reason="body_timeout") == 1
    run(scenario())


def test_upstream_dying_mid_stream_cuts_the_client_and_counts():
    async def scenario():
        async with proxied() as (sc, url), aiohttp.ClientSession() as s:
            async with s.get(url + "/sse_die") as r:
                assert await r.content.readuntil(b"\n\n") == b"data: first\n\n"
                with pytest.raises(aiohttp.ClientPayloadError):
                    await r.content.read()          # truncated, never a clean end
            await until(lambda: v(sc, "trimtab_requests_total", model="m1",
                                  outcome="upstream_error") == 1)
            assert v(sc, "trimtab_requests_total", model="m1", outcome="ok") == 0
            assert sc.admission.in_flight == 0
    run(scenario())


async def _leave(url: str, method: str, path: str, *, read_first_chunk: bool = False) -> None:
    """A client that sends a request and leaves (closes its connection) before the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    await writer.drain()
    if read_first_chunk:
        await reader.readuntil(b"data: first")
    else:
        await asyncio.sleep(0.2)
    writer.transport.abort()


@pytest.mark.parametrize("where", ["upstream-slow", "waiting-at-the-door", "mid-stream"])
def test_a_request_the_client_abandons_is_counted_as_client_closed(where):
    """Issue 18 (3): abandoned requests were never counted, so the arrival rate read low."""
    async def scenario():
        state: dict = {}
        async with proxied(state, initial={"concurrency_limit": 1},
                           limits={"max_queue_length": 4, "queue_timeout_s": 10}) as (sc, url):
            async with aiohttp.ClientSession() as s:
                blocker = None
                if where == "waiting-at-the-door":
                    blocker = asyncio.create_task(s.post(url + "/hold"))
                    await until(lambda: state["concurrent"] == 1)
                    await _leave(url, "POST", "/hold")
                elif where == "upstream-slow":
                    await _leave(url, "POST", "/hold")
                else:
                    await _leave(url, "GET", "/sse", read_first_chunk=True)
                await until(lambda: v(sc, "trimtab_requests_total", model="m1",
                                      outcome="client_closed") == 1)
                assert v(sc, "trimtab_request_duration_seconds_count", model="m1") == 1
                if blocker is not None:
                    state["release"].set()
                    (await blocker).release()
                await until(lambda: v(sc, "trimtab_in_flight_requests", model="m1") == 0)
                assert v(sc, "trimtab_queue_depth", model="m1") == 0
                total = sum(v(sc, "trimtab_requests_total", model="m1", outcome=o) or 0
                            for o in ("ok", "error", "shed", "timeout", "upstream_error",
                                      "client_closed"))
                assert total == (2 if blocker is not None else 1)
    run(scenario())


async def _closed_within(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """True when the proxy closed the connection (EOF) within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while await reader.read(4096):
                pass
        return True
    except (TimeoutError, ConnectionError):
        return False


GUARD = {"header_timeout_s": 0.4, "keepalive_idle_s": 0.6, "max_connections": 3}


def test_a_slow_request_head_is_cut_at_the_header_deadline_and_counted():
    """Issue 18 (2): headers at one byte a second held a connection for 75 s and more."""
    async def scenario():
        async with proxied(limits=GUARD) as (sc, url):
            reader, writer = await asyncio.open_connection("127.0.0.1", sc.proxy_port)
            for byte in b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ":
                writer.write(bytes([byte]))
                await asyncio.sleep(0.02)      # 0.8 s in all: past the 0.4 s deadline
                if writer.transport.is_closing() or reader.at_eof():
                    break
            assert await _closed_within(reader, 5.0), "the slow head was not cut"
            cut = v(sc, "trimtab_proxy_connections_closed_total", reason="header_timeout")
            assert cut == 1, cut
            writer.close()
    run(scenario())


def test_a_silent_connection_is_cut_and_an_idle_keepalive_one_closed():
    async def scenario():
        async with proxied(limits=GUARD) as (sc, url):
            silent_r, silent_w = await asyncio.open_connection("127.0.0.1", sc.proxy_port)
            assert await _closed_within(silent_r, 2.0)
            assert v(sc, "trimtab_proxy_connections_closed_total", reason="header_timeout") == 1
            reader, writer = await asyncio.open_connection("127.0.0.1", sc.proxy_port)
            for _ in range(2):                 # a second request on the same connection works
                writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                await asyncio.sleep(0.3)       # idle, but under the keep-alive limit
            assert await _closed_within(reader, 2.0)   # idle past 0.6 s: closed
            # idle keep-alive closes are aiohttp's own timer, not a header timeout
            assert v(sc, "trimtab_proxy_connections_closed_total", reason="header_timeout") == 1
            writer.close()
            silent_w.close()
    run(scenario())


def test_connections_past_the_cap_are_closed_at_once_and_counted():
    async def scenario():
        async with proxied(limits={**GUARD, "header_timeout_s": 30}) as (sc, url):
            held = [await asyncio.open_connection("127.0.0.1", sc.proxy_port) for _ in range(3)]
            await until(lambda: v(sc, "trimtab_proxy_open_connections") == 3)
            reader, writer = await asyncio.open_connection("127.0.0.1", sc.proxy_port)
            assert await _closed_within(reader, 2.0)
            assert v(sc, "trimtab_proxy_connections_closed_total",
                     reason="connection_limit") == 1
            for _, w in held:
                w.close()
            await until(lambda: v(sc, "trimtab_proxy_open_connections") == 0)
            async with aiohttp.ClientSession() as s, s.get(url + "/echo") as r:
                assert r.status == 200         # room again once they closed
    run(scenario())


def test_malformed_requests_are_one_rate_limited_line_each_and_counted(caplog):
    """Issue 18: each malformed request logged about ten ERROR lines with a traceback."""
    async def scenario():
        async with proxied() as (sc, url):
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", sc.proxy_port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
                assert (await reader.read(100)).startswith(b"HTTP/1.0 400")
                writer.close()
            await until(lambda: v(sc, "trimtab_proxy_connections_closed_total",
                                  reason="malformed_request") == 3)
    with caplog.at_level("DEBUG"):
        run(scenario())
    proxy_lines = [r for r in caplog.records
                   if r.name in ("aiohttp.server", "trimtab.collectors.proxy")]
    assert len(proxy_lines) == 1                       # three alike: one line in 10 s
    line = proxy_lines[0]
    assert line.levelname == "WARNING" and line.exc_info is None
    assert "\n" not in line.getMessage() and "Content-Length" in line.getMessage()


@pytest.mark.parametrize("coding,status", [("gzip, chunked", 501), ("deflate, chunked", 501),
                                           ("chunked", 200)])
def test_a_transfer_coding_the_hop_cannot_keep_is_refused_not_dropped(coding, status):
    """Issue 18: Transfer-Encoding: gzip, chunked was forwarded with the gzip coding dropped."""
    async def scenario():
        async with proxied() as (sc, url):
            reader, writer = await asyncio.open_connection("127.0.0.1", sc.proxy_port)
            writer.write(f"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n"
                         "Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode())
            answer = await reader.read()
            writer.close()
            assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]
            if status == 501:
                assert b"not supported" in answer
                assert v(sc, "trimtab_proxy_rejected_requests_total", model="m1",
                         reason="bad_request") == 1
    run(scenario())
