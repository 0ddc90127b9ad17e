"""Admission proxy: an asynchronous reverse proxy that enforces the concurrency limit and measures latency."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from itertools import chain
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from trimtab.collectors.admission import Admission, QueueFull, QueueTimeout
from trimtab.collectors.connguard import ConnectionGuard, GuardedServer
from trimtab.collectors.proxy_metrics import OTHER_MODEL, ModelChildren, ProxyMetrics
from trimtab.collectors.settings import ProxyLimits
from trimtab.collectors.sse import SseTimer
from trimtab.collectors.upstream import UpstreamError, UpstreamPool, UpstreamResponse, UpstreamTimeout

log = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 section 7.6.1) are never forwarded; Host is set for the upstream
# and Content-Length is recomputed from the body we forward.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length",
    "expect"})   # the body is buffered already: no 100-continue towards the upstream
SMALL_BODY_BYTES = 256 * 1024


class BodyTooLarge(Exception):
    pass


def model_from_request(path: str, body: bytes, models: frozenset[str], default: str) -> str:
    """The bounded model label: Triton/KServe path, else an OpenAI-style JSON ``model``.

    ``/v2/models/resnet/infer`` -> ``resnet`` if configured, else ``other``; a JSON body
    ``{"model": "llama", ...}`` likewise; anything else is the default (first) model.
    """
    name: str | None = None
    if path.startswith("/v2/models/"):
        name = path[len("/v2/models/"):].split("/", 1)[0] or None
    elif body[:1] == b"{" and b'"model"' in body:
        try:
            value = json.loads(body).get("model")
        except (ValueError, AttributeError, RecursionError):
            value = None        # not JSON, not an object, or nested past the parser's depth
        name = value if isinstance(value, str) else None
    if name is None:
        return default
    return name if name in models else OTHER_MODEL


def _is_event_stream(headers: list[tuple[str, str]]) -> bool:
    return any(k.lower() == "content-type" and v.lower().startswith("text/event-stream")
               for k, v in headers)


def _time_tokens(timer: SseTimer, chunk: bytes, now_s: float, sse: tuple[Any, Any]) -> None:
    """Feed one forwarded chunk to the stream's timer; observe its first token and gaps."""
    had_first = timer.ttft_s is not None
    timer.feed(chunk, now_s)
    if not had_first and timer.ttft_s is not None:
        sse[0].observe(timer.ttft_s)
    for gap_s in timer.gaps_s:
        sse[1].observe(gap_s)


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class AdmissionProxy:
    """The proxy's request handler; plug it into ``aiohttp.web.Server``."""

    def __init__(self, upstream: str, admission: Admission, metrics: ProxyMetrics,
                 limits: ProxyLimits, models: tuple[str, ...],
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._upstream = upstream.rstrip("/")
        self._admission = admission
        self._metrics = metrics
        self._limits = limits
        self._models = frozenset(models)
        self._default = models[0]
        self._clock = clock
        self._pool: UpstreamPool | None = None

    async def start(self) -> None:
        self._pool = UpstreamPool(self._upstream,
                                  connect_timeout_s=self._limits.upstream_connect_timeout_s,
                                  read_timeout_s=self._limits.upstream_timeout_s)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    def server(self, guard: ConnectionGuard) -> web.Server:
        # Header limits are enforced by the handler (431, counted); aiohttp's own parser limits
        # sit above ours so it only catches the grossly oversized. The guard bounds how long a
        # head may take, how long a connection may idle and how many may be open.
        cap = 2 * self._limits.max_header_bytes
        return GuardedServer(self.handle, guard, handler_cancellation=True, access_log=None,
                             max_line_size=cap, max_field_size=cap, auto_decompress=False,
                             keepalive_timeout=self._limits.keepalive_idle_s)

    # --- request path ---------------------------------------------------------------------
    def _reject(self, ch: ModelChildren, reason: str, status: int, message: str,
                headers: dict[str, str] | None = None) -> web.Response:
        ch.rejected[reason].inc()
        return _json_error(status, message, headers)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        limit = self._limits.max_body_bytes
        if not request.body_exists:
            return b""
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge()
            chunks.append(chunk)

    def _reject_early(self, request: web.BaseRequest, reason: str, status: int,
                      message: str) -> web.Response:
        """Refused before the body is read: the label comes from the path alone."""
        model = model_from_request(request.path, b"", self._models, self._default)
        return self._reject(self._metrics.by_model[model], reason, status, message)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        t0 = self._clock()
        limits = self._limits
        raw = request.raw_headers
        header_bytes = len(request.raw_path) + 4 * len(raw) + sum(map(len, chain(*raw)))
        if header_bytes > limits.max_header_bytes:
            return self._reject_early(request, "header_too_large", 431,
                                      f"request headers are {header_bytes} bytes; the limit is "
                                      f"{limits.max_header_bytes}")
        coding = request.headers.get("Transfer-Encoding")
        if coding is not None:
            codings = [c.strip().lower() for c in coding.split(",") if c.strip()]
            if any(c != "chunked" for c in codings):
                # The hop to the model server sends the body whole with a Content-Length, so a
                # coding other than chunked (gzip, deflate) would be silently dropped: refuse
                # it (RFC 9112 6.1: 501 for a transfer coding the server does not implement).
                return self._reject_early(
                    request, "bad_request", 501,
                    f"Transfer-Encoding {', '.join(codings)} is not supported; send the body "
                    "as is or chunked (Content-Encoding passes through)")
        length = request.content_length
        if length is not None and length > limits.max_body_bytes:
            return self._reject_early(request, "body_too_large", 413,
                                      f"request body is {length} bytes; the limit is "
                                      f"{limits.max_body_bytes}")
        try:
            if request.content.is_eof():        # all of it arrived with the head: no timer
                body = await self._read_body(request)
            else:
                async with asyncio.timeout(limits.body_timeout_s):
                    body = await self._read_body(request)
        except BodyTooLarge:
            return self._reject_early(request, "body_too_large", 413,
                                      f"request body exceeds {limits.max_body_bytes} bytes")
        except asyncio.TimeoutError:
            return self._reject_early(request, "body_timeout", 408,
                                      f"request body not received within "
                                      f"{limits.body_timeout_s} s")
        except aiohttp.ClientPayloadError as exc:   # malformed chunked encoding and the like
            return self._reject_early(request, "bad_request", 400,
                                      f"malformed request body: {exc}")
        model = model_from_request(request.path, body, self._models, self._default)
        ch = self._metrics.by_model[model]
        try:
            return await self._admit_and_forward(request, body, ch, t0)
        except asyncio.CancelledError:
            # The client closed the connection (aiohttp cancels the handler): waiting at the
            # door, waiting on the upstream or mid-stream. Count it, then let it unwind.
            self._client_closed(ch, t0)
            raise

    def _client_closed(self, ch: ModelChildren, t0: float) -> None:
        ch.requests["client_closed"].inc()
        ch.duration.observe(self._clock() - t0)

    async def _admit_and_forward(self, request: web.BaseRequest, body: bytes,
                                 ch: ModelChildren, t0: float) -> web.StreamResponse:
        admission = self._admission
        if not admission.try_acquire():
            ch.queue_depth.inc()
            try:
                await admission.acquire(admission.queue_timeout_s)
            except QueueFull:
                return self._shed(ch, t0, "shed", "queue_full",
                                  f"queue full ({admission.queued} waiting, limit "
                                  f"{admission.limit} in flight)")
            except QueueTimeout:
                return self._shed(ch, t0, "timeout", "queue_timeout",
                                  f"not admitted within {admission.queue_timeout_s} s")
            finally:
                ch.queue_depth.dec()
        ch.queue_duration.observe(self._clock() - t0)
        ch.in_flight.inc()
        try:
            return await self._forward(request, body, ch, t0)
        finally:
            ch.in_flight.dec()
            admission.release()

    def _shed(self, ch: ModelChildren, t0: float, outcome: str, reason: str,
              message: str) -> web.Response:
        ch.rejected[reason].inc()
        ch.requests[outcome].inc()
        ch.duration.observe(self._clock() - t0)
        return _json_error(503, message, {"Retry-After": str(self._limits.retry_after_s)})

    def _upstream_failed(self, ch: ModelChildren, t0: float, status: int,
                         message: str) -> web.Response:
        ch.requests["upstream_error"].inc()
        ch.duration.observe(self._clock() - t0)
        return _json_error(status, message)

    async def _forward(self, request: web.BaseRequest, body: bytes, ch: ModelChildren,
                       t0: float) -> web.StreamResponse:
        assert self._pool is not None, "start() the proxy first"
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        if request.remote:
            headers.append(("X-Forwarded-For", request.remote))
        try:
            upstream = await self._pool.request(request.method, request.raw_path, headers, body)
        except UpstreamTimeout as exc:
            return self._upstream_failed(ch, t0, 504, str(exc))
        except UpstreamError as exc:
            return self._upstream_failed(ch, t0, 502, str(exc))
        outcome = "error" if upstream.status >= 500 else "ok"
        try:
            out_headers = [(k, v) for k, v in upstream.headers if k.lower() not in HOP_BY_HOP]
            length = upstream.content_length
            if length is not None and length <= SMALL_BODY_BYTES:
                # Not a stream: read it whole and answer in one write.
                data = await upstream.read()
                ch.ttfb.observe(self._clock() - t0)
                response = web.Response(status=upstream.status, reason=upstream.reason or None,
                                        body=data, headers=CIMultiDict(out_headers))
            else:
                response, counted = await self._stream(request, upstream, out_headers, ch, t0)
                if counted:
                    return response      # counted in _stream (upstream failure, client left)
        except UpstreamTimeout as exc:
            return self._upstream_failed(ch, t0, 504, str(exc))
        except UpstreamError as exc:
            return self._upstream_failed(ch, t0, 502, str(exc))
        finally:
            upstream.release()
        ch.requests[outcome].inc()
        ch.duration.observe(self._clock() - t0)
        return response

    async def _stream(self, request: web.BaseRequest, upstream: UpstreamResponse,
                      out_headers: list[tuple[str, str]], ch: ModelChildren,
                      t0: float) -> tuple[web.StreamResponse, bool]:
        """Pass chunks on as they arrive (server-sent events), timing the first one.

        Returns (response, counted): ``counted`` is True when the request was already counted
        here: an upstream failure mid-stream, or a client that left mid-stream (not the
        upstream's fault: outcome client_closed).
        """
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason or None)
        for k, v in out_headers:
            response.headers.add(k, v)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        first = True
        sse = ch.sse() if _is_event_stream(out_headers) else None
        timer = SseTimer(started_s=t0) if sse is not None else None
        chunks = upstream.iter_chunks().__aiter__()
        while True:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except UpstreamError:
                # Headers are gone already: the only honest signal left is to cut the connection.
                ch.requests["upstream_error"].inc()
                ch.duration.observe(self._clock() - t0)
                if request.transport is not None:
                    request.transport.close()
                return response, True
            if first:
                ch.ttfb.observe(self._clock() - t0)
                first = False
            if timer is not None and sse is not None:
                _time_tokens(timer, chunk, self._clock(), sse)
            try:
                await response.write(chunk)
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                self._client_closed(ch, t0)     # the client left; the upstream did its part
                return response, True
        if first:
            ch.ttfb.observe(self._clock() - t0)
        await response.write_eof()
        return response, False
