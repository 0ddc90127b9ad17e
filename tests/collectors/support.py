"""Builders and loopback servers shared by the sidecar tests."""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvloop
from aiohttp import web

from trimtab.collectors.settings import ControlSettings, ProxyLimits, SidecarConfig

FIXTURES = Path(__file__).parent / "fixtures"

# `trimtab sidecar` runs on uvloop (collectors.sidecar.run_loop): the proxy's and its upstream
# client's behaviours are checked on it and on asyncio's own loop. A test module imports
# ``event_loop_kind`` (autouse, so every test runs once per loop) and calls ``run_on_loop``.
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
_loop_factory = [asyncio.new_event_loop]


@pytest.fixture(autouse=True, params=LOOPS.values(), ids=LOOPS.keys())
def event_loop_kind(request):
    _loop_factory[0] = request.param
    yield
    _loop_factory[0] = asyncio.new_event_loop


def run_on_loop(coro, timeout_s: float):
    """Run a test scenario on the loop ``event_loop_kind`` chose, within ``timeout_s``."""
    with asyncio.Runner(loop_factory=_loop_factory[0]) as runner:
        return runner.run(asyncio.wait_for(coro, timeout_s))


def make_config(**overrides) -> SidecarConfig:
    """A SidecarConfig on ephemeral loopback ports with small limits; override what a test needs."""
    limits = overrides.pop("limits", {})
    initial = overrides.pop("initial", {})
    base = dict(upstream="http://127.0.0.1:9", listen_port=0, metrics_port=0, proxy=True,
                gpu="off", models=("m1", "m2"), slo_latency_s=(0.3,), control_token="s3cret",
                initial=ControlSettings(**{"concurrency_limit": 4, **initial}),
                limits=ProxyLimits(**{"max_queue_length": 4, "queue_timeout_s": 0.5,
                                      "upstream_timeout_s": 1.0, **limits}))
    base.update(overrides)
    return SidecarConfig(**base)


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run an aiohttp app on 127.0.0.1:<free port>; yields its base URL, cleans up on exit."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def upstream_app(state: dict | None = None) -> web.Application:
    """A model-server stand-in with endpoints that misbehave on purpose."""
    state = state if state is not None else {}
    state.setdefault("concurrent", 0)
    state.setdefault("max_concurrent", 0)
    state.setdefault("release", asyncio.Event())

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"path": request.path_qs, "len": len(body),
                                  "headers": dict(request.headers)})

    async def hold(request: web.Request) -> web.Response:
        state["concurrent"] += 1
        state["max_concurrent"] = max(state["max_concurrent"], state["concurrent"])
        try:
            await state["release"].wait()
        finally:
            state["concurrent"] -= 1
        return web.json_response({"held": True})

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()

    async def reset(request: web.Request) -> web.Response:
        request.transport.close()
        await asyncio.sleep(0.05)
        return web.Response()

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await state.setdefault("sse_go", asyncio.Event()).wait()
        await resp.write(b"data: second\n\n")
        await resp.write_eof()
        return resp

    async def tokens(request: web.Request) -> web.StreamResponse:
        """An OpenAI-style streamed completion: the first token after 0.2 s, four more 0.05 s
        apart (the last two in one write), then [DONE]."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await asyncio.sleep(0.2)
        await resp.write(b'data: {"choices": [{"text": "a"}]}\n\n')
        for _ in range(2):
            await asyncio.sleep(0.05)
            await resp.write(b'data: {"choices": [{"text": "b"}]}\n\n')
        await asyncio.sleep(0.05)
        await resp.write(b'data: {"choices": [{"text": "c"}]}\n\ndata: {"choices": []}\n\n')
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def sse_die(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await asyncio.sleep(0.05)
        request.transport.close()               # the model server crashes mid-answer
        return resp

    async def status500(request: web.Request) -> web.Response:
        return web.json_response({"error": "model failed"}, status=500)

    async def infer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"model_name": request.match_info["m"], "outputs": []})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/echo", echo)
    app.router.add_post("/hold", hold)
    app.router.add_get("/hang", hang)
    app.router.add_get("/reset", reset)
    app.router.add_get("/sse", sse)
    app.router.add_get("/sse_die", sse_die)
    app.router.add_get("/tokens", tokens)
    app.router.add_get("/fail", status500)
    app.router.add_post("/v2/models/{m}/infer", infer)
    app.router.add_post("/v1/completions", echo)
    return app


def load_fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def load_json_fixture(name: str) -> dict:
    return json.loads(load_fixture(name))
