"""The sidecar's drain on SIGTERM: a request sent on a kept-alive connection while it stops
is answered (then the connection closes), not dropped silently (found by the fault soak)."""
from __future__ import annotations

import asyncio

import aiohttp

from trimtab.collectors.sidecar import Sidecar
from tests.collectors.support import make_config, serve, upstream_app


async def _request_during_stop() -> tuple[int, str, bool]:
    async with serve(upstream_app()) as up:
        sc = Sidecar(make_config(upstream=up))
        await sc.start()
        url = f"http://127.0.0.1:{sc.proxy_port}/echo"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=b"x") as first:
                assert first.status == 200
                await first.read()
            stopping = asyncio.create_task(sc.stop())
            for _ in range(3):           # let stop() run to its first wait: listener closed
                await asyncio.sleep(0)
            assert sc._proxy_server is not None and not sc._proxy_server.is_serving()
            # The session reuses its kept-alive connection: the sidecar must still answer it.
            try:
                async with session.post(url, data=b"y") as second:
                    await second.read()
                    answer = (second.status, second.headers.get("Connection", ""))
            finally:
                await stopping
        refused = False
        try:
            async with aiohttp.ClientSession() as fresh:
                await fresh.post(url, data=b"z")
        except aiohttp.ClientConnectorError:
            refused = True
    return answer[0], answer[1].lower(), refused


def test_a_request_on_a_kept_alive_connection_while_stopping_is_answered_then_closed():
    status, connection, refused_after = asyncio.run(asyncio.wait_for(_request_during_stop(), 30))
    assert (status, connection) == (200, "close")
    assert refused_after          # and new connections are refused once stopped
