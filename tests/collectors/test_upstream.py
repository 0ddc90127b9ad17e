"""The proxy's hand-written upstream client against a raw loopback server sending exact bytes."""
from __future__ import annotations

import asyncio
import contextlib

import pytest

from trimtab.collectors.upstream import UpstreamError, UpstreamPool, UpstreamTimeout
from tests.collectors.support import event_loop_kind, run_on_loop  # noqa: F401 (autouse fixture)


@contextlib.asynccontextmanager
async def raw_server(answers: list[bytes | None], seen: list[bytes] | None = None,
                     close_after: bool = False, hang_after: bool = False):
    """Answers each request head with the next canned bytes; None means: close at once."""
    seen = seen if seen is not None else []
    queue = list(answers)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(b"<connection>")
        try:
            while queue:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                seen.append(head + await reader.readexactly(length))
                answer = queue.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if close_after:
                    break
            if hang_after:
                await asyncio.sleep(3600)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


async def body_of(pool: UpstreamPool, method: str = "GET", body: bytes = b""):
    resp = await pool.request(method, "/p?q=1", [("X-A", "1")], body)
    try:
        return resp.status, resp.headers, b"".join([c async for c in resp.iter_chunks()])
    finally:
        resp.release()


def run(coro):
    return run_on_loop(coro, 20)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


def test_request_bytes_and_keep_alive_reuse():
    async def scenario():
        async with raw_server([OK, OK]) as (url, seen):
            pool = UpstreamPool(url)
            assert await body_of(pool, "POST", b"{}") == (
                200, [("Content-Length", "5"), ("Content-Type", "text/plain")], b"hello")
            assert (await body_of(pool))[2] == b"hello"          # same connection reused
            await pool.close()
        assert seen[1].startswith(b"POST /p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"X-A: 1\r\nContent-Length: 2\r\n\r\n{}" in seen[1]
        assert seen.count(b"<connection>") == 1 and len(seen) == 3
    run(scenario())


FRAMINGS = {
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n", b"hello world"),
    "close-delimited": (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", b"until the end"),
    "no-content": (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    "interim-100": (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, b"hello"),
    "big-fixed": (b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300000,
                  b"x" * 300000),
}


@pytest.mark.parametrize("answer,body", FRAMINGS.values(), ids=FRAMINGS.keys())
def test_body_framings(answer, body):
    async def scenario():
        async with raw_server([answer], close_after=b"HTTP/1.0" in answer) as (url, _):
            pool = UpstreamPool(url)
            assert (await body_of(pool))[2] == body
            await pool.close()
    run(scenario())


def test_head_request_has_no_body_even_with_a_length():
    async def scenario():
        async with raw_server([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", OK]) as (url, _):
            pool = UpstreamPool(url)
            assert (await body_of(pool, "HEAD"))[2] == b""
            assert (await body_of(pool))[2] == b"hello"         # the connection stayed usable
            await pool.close()
    run(scenario())


def test_a_keep_alive_connection_closed_while_idle_is_retried_once():
    async def scenario():
        async with raw_server([OK, None]) as (url, seen):   # answers once, then hangs up
            pool = UpstreamPool(url)
            await body_of(pool)
            await asyncio.sleep(0.05)
            # the reused connection is dead; the request goes out again on a fresh one,
            # which this server also closes: a clear error, never a hang
            with pytest.raises(UpstreamError):
                await body_of(pool)
            await pool.close()
        assert seen.count(b"<connection>") == 2            # one retry, not a loop
    run(scenario())


def test_a_post_on_a_dead_keep_alive_connection_is_not_sent_twice():
    async def scenario():
        async with raw_server([OK, None, OK]) as (url, seen):
            pool = UpstreamPool(url)
            await body_of(pool, "POST", b"{}")
            with pytest.raises(UpstreamError):
                await body_of(pool, "POST", b"{}")
            await pool.close()
        assert seen.count(b"<connection>") == 1
    run(scenario())


def test_connection_close_answers_are_not_reused():
    async def scenario():
        close_ok = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        async with raw_server([close_ok], close_after=True) as (url, _):
            pool = UpstreamPool(url)
            await body_of(pool)
            assert len(pool._idle) == 0
            await pool.close()
    run(scenario())


BROKEN = {
    "bad-status-line": b"HTCPCP/1.0 418 teapot\r\n\r\n",
    "bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "bad-header": b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    "truncated-body": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "closed-before-answer": None,
}


@pytest.mark.parametrize("answer", BROKEN.values(), ids=BROKEN.keys())
def test_protocol_breaks_are_upstream_errors(answer):
    async def scenario():
        async with raw_server([answer], close_after=True) as (url, _):
            pool = UpstreamPool(url)
            with pytest.raises(UpstreamError):
                await body_of(pool)
            await pool.close()
    run(scenario())


@pytest.mark.parametrize("length", [10, 300_000], ids=["prefetched", "streamed"])
def test_silence_is_a_timeout(length):
    async def scenario():
        answer = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\nabc".encode()
        async with raw_server([answer], hang_after=True) as (url, _):
            pool = UpstreamPool(url, read_timeout_s=0.2)
            with pytest.raises(UpstreamTimeout):                # 3 bytes, then silence
                resp = await pool.request("GET", "/", [], b"")
                try:
                    [c async for c in resp.iter_chunks()]
                finally:
                    resp.release()
            await pool.close()
    run(scenario())


def test_no_answer_at_all_is_a_timeout_and_refused_connect_an_error():
    async def scenario():
        async with raw_server([], hang_after=True) as (url, _):
            with pytest.raises(UpstreamTimeout):
                await UpstreamPool(url, read_timeout_s=0.2).request("GET", "/", [], b"")
        with pytest.raises(UpstreamError) as err:
            await UpstreamPool("http://127.0.0.1:9").request("GET", "/", [], b"")
        assert "cannot connect" in str(err.value)
    run(scenario())


def test_idle_connections_expire():
    async def scenario():
        now = [0.0]
        async with raw_server([OK, OK]) as (url, seen):
            pool = UpstreamPool(url, idle_ttl_s=4.0, clock=lambda: now[0])
            await body_of(pool)
            now[0] = 10.0                    # older than the TTL: closed, a new one is opened
            await body_of(pool)
            await pool.close()
        assert seen.count(b"<connection>") == 2
    run(scenario())


@pytest.mark.parametrize("url", ["ftp://x", "127.0.0.1:80", "http://"], ids=str)
def test_bad_upstream_url(url):
    with pytest.raises(ValueError):
        UpstreamPool(url)


def test_a_cancelled_request_closes_its_connection():
    """The client left while the upstream was thinking: the connection is closed, not kept."""
    async def scenario():
        closed = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reader.read()                  # b"" once the proxy side closes
            closed.set()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        pool = UpstreamPool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        task = asyncio.create_task(pool.request("GET", "/", [], b""))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(closed.wait(), 2)
        assert len(pool._idle) == 0
        await pool.close()
        server.close()
    run(scenario())


def test_a_big_answer_read_slowly_is_not_buffered_whole():
    """Back-pressure: past PAUSE_BYTES the upstream socket is paused until the reader catches up."""
    from trimtab.collectors.upstream import PAUSE_BYTES
    size = 8 * 1024 * 1024
    answer = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode() + b"x" * size

    async def scenario():
        async with raw_server([answer]) as (url, _):
            pool = UpstreamPool(url)
            resp = await pool.request("GET", "/", [], b"")
            conn = resp._conn
            got, most = 0, 0
            async for chunk in resp.iter_chunks():
                got += len(chunk)
                most = max(most, len(conn.buf))
                await asyncio.sleep(0.001)           # a slow client downstream
            resp.release()
            await pool.close()
            return got, most
    got, most = run(scenario())
    assert got == size
    assert most <= PAUSE_BYTES + 256 * 1024          # one socket read past the mark at most
