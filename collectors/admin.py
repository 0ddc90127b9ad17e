"""The admin port: /metrics, /healthz, /readyz and the bearer-token control API."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from trimtab.collectors.control import ControlState, InvalidSettings
from trimtab.collectors.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
SETTINGS_PATH = "/control/v1/settings"
MAX_CONTROL_BODY_BYTES = 64 * 1024


class UpstreamProbe:
    """Is the model server reachable? An HTTP health path if known, else a TCP connect; cached 1 s."""

    def __init__(self, upstream: str, health_path: str | None = None, timeout_s: float = 1.0,
                 cache_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        parts = urlsplit(upstream)
        self._url = upstream.rstrip("/") + (health_path or "")
        self._http = health_path is not None
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._clock = clock
        self._last: tuple[float, bool, str] | None = None

    async def _check(self) -> tuple[bool, str]:
        try:
            if self._http:
                timeout = aiohttp.ClientTimeout(total=self._timeout_s)
                async with aiohttp.ClientSession(timeout=timeout) as s, s.get(self._url) as r:
                    return r.status == 200, f"GET {self._url} -> {r.status}"
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port), self._timeout_s)
            writer.close()
            return True, f"tcp {self._host}:{self._port} open"
        except (OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
            return False, f"upstream {self._url} unreachable: {type(exc).__name__} {exc}".strip()

    async def __call__(self) -> tuple[bool, str]:
        now = self._clock()
        if self._last is None or now - self._last[0] >= self._cache_s:
            ok, why = await self._check()
            self._last = (now, ok, why)
        return self._last[1], self._last[2]


class AdminServer:
    """aiohttp application for the admin port; ``token`` None leaves the control API read-only."""

    def __init__(self, registry: CollectorRegistry, control: ControlState, token: str | None,
                 readiness: Callable[[], Awaitable[tuple[bool, str]]]) -> None:
        self._registry = registry
        self._control = control
        self._token = token.encode() if token else None
        self._readiness = readiness
        self._auth_log = RateLimitedLog(log)
        self.app = web.Application(client_max_size=MAX_CONTROL_BODY_BYTES)
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get(SETTINGS_PATH, self.get_settings)
        self.app.router.add_put(SETTINGS_PATH, self.put_settings)

    async def metrics(self, request: web.Request) -> web.Response:
        # In a thread: the GIL is handed back every 5 ms, so a 15 ms page never stalls the
        # proxy's event loop for its whole duration.
        body = await asyncio.get_running_loop().run_in_executor(
            None, generate_latest, self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        ok, why = await self._readiness()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    # --- control API ------------------------------------------------------------------------
    def _authorised(self, request: web.Request) -> web.Response | None:
        """None if the bearer token matches; else the 401/403 response to send."""
        if self._token is None:
            if request.method == "GET":
                return None
            self._control.requests.labels("unauthorized").inc()
            return web.json_response(
                {"error": "control API is read-only: no token configured "
                          "(--control-token-file or TRIMTAB_CONTROL_TOKEN)",
                 "field": "Authorization"}, status=403)
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest runs in time independent of where the strings differ.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 self._token):
            self._control.requests.labels("unauthorized").inc()
            self._auth_log.warn("auth", f"control API: failed authentication from "
                                        f"{request.remote} ({request.method} {request.path}: "
                                        f"{'wrong' if given else 'no'} bearer token)")
            return web.json_response(
                {"error": "missing or wrong bearer token", "field": "Authorization"},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="trimtab-sidecar"'})
        return None

    async def get_settings(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied is not None:
            return denied
        return web.json_response(self._control.settings.model_dump())

    async def put_settings(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied is not None:
            return denied
        try:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        except web.HTTPRequestEntityTooLarge:
            self._control.requests.labels("invalid").inc()
            return web.json_response({"error": f"body over {MAX_CONTROL_BODY_BYTES} bytes",
                                      "field": "body"}, status=413)
        except ValueError as exc:
            self._control.requests.labels("invalid").inc()
            return web.json_response({"error": f"body is not JSON: {exc}", "field": "body"},
                                     status=400)
        try:
            settings = await self._control.update(body)
        except InvalidSettings as exc:
            self._control.requests.labels("invalid").inc()
            return web.json_response({"error": str(exc), "field": exc.field}, status=400)
        except Exception as exc:   # the hook failed: settings are in force locally, say so
            log.exception("applying control settings failed")
            self._control.requests.labels("error").inc()
            return web.json_response({"error": f"applied to the proxy, but: {exc}",
                                      "field": "max_batch_size"}, status=500)
        self._control.requests.labels("ok").inc()
        return web.json_response(settings.model_dump())
