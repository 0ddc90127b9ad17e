"""Bounds on the proxy's client connections: a header-read deadline, idle keep-alive and a cap.

A client that sends its request head one byte a second (slowloris), opens connections and
sends nothing, or opens more connections than the proxy can serve, must not hold the proxy:
each connection must deliver a complete request head within ``header_timeout_s`` of its first
byte (or of opening), an idle keep-alive connection is closed after ``keepalive_idle_s``
(aiohttp's own keep-alive timer), and connections past ``max_connections`` are closed at once.
Every cut is counted in ``trimtab_proxy_connections_closed_total{reason}``, and a malformed
request (aiohttp answers 400 and closes) is one rate-limited log line, not a traceback.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from trimtab.collectors import names
from trimtab.collectors.ratelog import RateLimitedLog

CLOSE_REASONS = ("header_timeout", "connection_limit", "malformed_request")
log = logging.getLogger("trimtab.collectors.proxy")


class ConnectionGuard:
    """The shared count of open connections and the counters; one per proxy listener."""

    def __init__(self, registry: CollectorRegistry, *, header_timeout_s: float,
                 max_connections: int) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.open = 0
        self.draining = False      # stopping: each answer closes its connection
        self._closed = Counter(names.PROXY_CONNECTIONS_CLOSED,
                               names.BY_NAME[names.PROXY_CONNECTIONS_CLOSED].help, ["reason"],
                               registry=registry)
        self.closed = {r: self._closed.labels(r) for r in CLOSE_REASONS}
        self._open = Gauge(names.PROXY_OPEN_CONNECTIONS,
                           names.BY_NAME[names.PROXY_OPEN_CONNECTIONS].help, registry=registry)
        self._open.set_function(lambda: self.open)
        self.log = RateLimitedLog(log)


class GuardedServer(web.Server):
    """aiohttp's low-level server whose connections are held to a ConnectionGuard."""

    def __init__(self, handler: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard

    def __call__(self) -> web.RequestHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)


class GuardedHandler(web.RequestHandler):
    """One client connection: arms the header deadline whenever a request head is awaited."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager.guard
        self._head_timer: asyncio.TimerHandle | None = None
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        guard = self._guard
        if guard.open >= guard.max_connections:
            guard.closed["connection_limit"].inc()
            transport.close()
            return
        guard.open += 1
        self._counted = True
        self._arm()            # a connection that never sends a byte is cut as well

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._counted:
            self._guard.open -= 1
            self._counted = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count > before:
            self._disarm()     # a complete head arrived: the handler's own timeouts take over
        elif self._head_timer is None and self._idle():
            self._arm()        # the first bytes of the next head on a kept-alive connection

    async def finish_response(self, request: Any, resp: Any, start_time: Any) -> Any:
        # Draining: answer, then close (Connection: close), so the client's next request opens
        # a new connection, refused at once, instead of being written to one about to close.
        if self._guard.draining and not resp.prepared:
            resp.force_close()
        return await super().finish_response(request, resp, start_time)

    def close_if_idle(self) -> None:
        """Close the connection now unless a request is being read or answered on it."""
        if self._idle() and self.transport is not None:
            self.transport.close()

    def _idle(self) -> bool:
        return self._current_request is None and not self._messages

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._guard.header_timeout_s, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's "Error handling request" (a malformed request): one line, rate-limited,
        counted, no traceback (it used to be ten ERROR lines per request)."""
        exc = kwargs.get("exc_info")
        why = (f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException)
               else (args[0] % args[1:] if args else "error"))
        peer = self.transport.get_extra_info("peername") if self.transport else None
        self._guard.closed["malformed_request"].inc()
        self._guard.log.warn(f"malformed:{type(exc).__name__}",
                             f"proxy: malformed request from {peer[0] if peer else '?'}: {why}")

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._idle() and self.transport is not None:
            self._guard.closed["header_timeout"].inc()
            self.transport.close()
