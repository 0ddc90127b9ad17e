"""A lean HTTP/1.1 load generator for the sidecar benchmark: open-loop Poisson or closed-loop.

Hand-written on asyncio streams rather than an HTTP client library so the generator costs a
few tens of microseconds per request and is never the bottleneck of the proxy it measures.
Run as a separate process (``python -m trimtab.collectors.loadgen``), pinned to its own core.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import deque

from trimtab.common.poisson import steady_arrivals_s

REQUEST = (b"POST /v2/models/m1/infer HTTP/1.1\r\nHost: bench\r\n"
           b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def call(self) -> int:
        self.writer.write(REQUEST)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        else:
            raise ValueError("response without Content-Length (chunked is not supported)")
        if length:
            await self.reader.readexactly(length)
        return status


async def _connect(host: str, port: int) -> Conn:
    reader, writer = await asyncio.open_connection(host, port)
    return Conn(reader, writer)


async def open_loop(host: str, port: int, rate: float, duration_s: float, seed: int) -> dict:
    """Send at Poisson times whatever the answers do; a late answer never delays a send."""
    loop = asyncio.get_running_loop()
    idle: deque[Conn] = deque([await _connect(host, port) for _ in range(16)])
    latencies: list[float] = []
    lateness: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        conn = idle.popleft() if idle else await _connect(host, port)
        t0 = time.perf_counter()
        try:
            status = await conn.call()
        except (OSError, ValueError, asyncio.IncompleteReadError):
            errors += 1
            conn.writer.close()
            return
        latencies.append(time.perf_counter() - t0)
        if status != 200:
            errors += 1
        idle.append(conn)

    arrivals = steady_arrivals_s(rate, duration_s, seed).tolist()
    start = loop.time() + 0.05
    tasks = []
    for offset in arrivals:
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(max(0.0, loop.time() - (start + offset)))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.writer.close()
    return {"latencies_s": latencies, "errors": errors, "sent": len(arrivals),
            "lateness_p99_s": sorted(lateness)[int(0.99 * (len(lateness) - 1))] if lateness else 0}


async def closed_loop(host: str, port: int, conns: int, duration_s: float) -> dict:
    """Saturation: ``conns`` connections each send again as soon as they get an answer."""
    done = 0
    errors = 0
    stop_at = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal done, errors
        conn = await _connect(host, port)
        while time.perf_counter() < stop_at:
            try:
                status = await conn.call()
            except (OSError, ValueError, asyncio.IncompleteReadError):
                errors += 1
                conn = await _connect(host, port)
                continue
            done += 1 if status == 200 else 0
            errors += 0 if status == 200 else 1
        conn.writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(conns)])
    return {"rps": done / (time.perf_counter() - t0), "errors": errors}


def serve_bare(port: int) -> None:
    """A bare aiohttp server with the upstream's answer: the floor any aiohttp proxy sits on."""
    from aiohttp import web

    async def answer(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=b'{"outputs":[]}', content_type="application/json")

    async def run() -> None:
        server = web.Server(answer, access_log=None)
        await asyncio.get_running_loop().create_server(server, "127.0.0.1", port)
        await asyncio.Event().wait()

    asyncio.run(run())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--mode", choices=["open", "closed", "serve"], default="open")
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--duration-s", type=float, default=5.0)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    if a.mode == "serve":
        serve_bare(a.port)
        return
    if a.mode == "open":
        result = asyncio.run(open_loop(a.host, a.port, a.rate, a.duration_s, a.seed))
    else:
        result = asyncio.run(closed_loop(a.host, a.port, a.conns, a.duration_s))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
