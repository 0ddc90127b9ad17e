"""A stand-in for Triton's HTTP API (loopback aiohttp), for the endpoints the sidecar uses.

Not Triton: it speaks the same paths and JSON shapes for model config (GET
/v2/models/{m}/config), explicit-mode load with a config override (POST
/v2/repository/models/{m}/load), statistics (GET /v2/models/stats), readiness and /metrics,
serving the payloads recorded from a real Triton 2.51.0 (fixtures/triton-2.51.0-*, model
``scale``; a model ``nobatch`` with ``max_batch_size: 0``). Like Triton, a load replaces the stored config with the
posted one, and a config that is not valid JSON or sets max_batch_size on a model that cannot
batch is refused with 400 and ``{"error": ...}``.
"""
from __future__ import annotations

import copy
import json

from aiohttp import web

from tests.collectors.support import load_fixture, load_json_fixture

TRITON_METRICS = "triton-2.51.0-metrics.txt"
TRITON_STATS = "triton-2.51.0-stats.json"
TRITON_CONFIG = "triton-2.51.0-config-scale.json"


def triton_standin(state: dict) -> web.Application:
    state.setdefault("configs", {
        "scale": load_json_fixture(TRITON_CONFIG),
        "nobatch": {"name": "nobatch", "backend": "python", "max_batch_size": 0,
                    "input": [], "output": []},
    })
    state.setdefault("loads", [])
    state.setdefault("metrics_text", load_fixture(TRITON_METRICS))
    state.setdefault("stats", load_json_fixture(TRITON_STATS))
    state.setdefault("metrics_status", 200)

    async def get_config(request: web.Request) -> web.Response:
        name = request.match_info["m"]
        if name not in state["configs"]:
            return web.json_response({"error": f"Request for unknown model: '{name}' is not "
                                               "found"}, status=404)
        return web.json_response(state["configs"][name])

    async def load(request: web.Request) -> web.Response:
        name = request.match_info["m"]
        body = await request.json()
        raw = (body.get("parameters") or {}).get("config")
        state["loads"].append((name, raw))
        if raw is not None:
            try:
                config = json.loads(raw)
            except ValueError:
                return web.json_response({"error": "failed to parse config override"}, status=400)
            old = state["configs"].get(name, {})
            if old.get("max_batch_size", 0) == 0 and config.get("max_batch_size", 0) > 0:
                return web.json_response({"error": "model does not support batching"},
                                         status=400)
            state["configs"][name] = copy.deepcopy(config)
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state["stats"])

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=state["metrics_text"], status=state["metrics_status"],
                            content_type="text/plain")

    async def ready(request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_get("/v2/models/stats", stats)
    app.router.add_get("/v2/models/{m}/config", get_config)
    app.router.add_post("/v2/repository/models/{m}/load", load)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
