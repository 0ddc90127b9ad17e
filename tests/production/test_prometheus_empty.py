"""Issue 14 (4): the Prometheus source tells "no series" (Snapshot.empty) from "query failed",
against a stand-in Prometheus that answers each query with series, no series or an error."""
from __future__ import annotations

import json
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Iterator

import pytest

from trimtab.collectors import names as n
from trimtab.controllers.core.types import (FIELD_ARRIVAL_RATE, FIELD_IN_FLIGHT, FIELD_LATENCY,
                                            FIELD_QUEUE_DEPTH, FIELD_REPLICAS)
from trimtab.controllers.shell.sources.base import TargetSelector
from trimtab.controllers.shell.sources.prometheus import EXPECTED, PrometheusSource

NOW_UNIX_S = 1_700_000_000.0
TARGET = TargetSelector("ns/m", {"model": "m"})
OTHER = {"model": "other"}      # another target's series: answered, but not this target's


@pytest.fixture
def prometheus() -> Iterator[dict]:
    """``state["answers"]``: (substring of the PromQL, "fail" or a result list), first match
    wins; a query matching none is answered with no series."""
    state: dict = {"answers": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"]))
                                         .decode())
            query = form["query"][0]
            answer: object = []
            for fragment, a in state["answers"]:
                if fragment in query:
                    answer = a
                    break
            if answer == "fail":
                code, body = 422, {"status": "error", "errorType": "execution",
                                   "error": "query timed out"}
            else:
                code, body = 200, {"status": "success",
                                   "data": {"resultType": "vector", "result": answer}}
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_port}"
    yield state
    server.shutdown()


def _read(state: dict):
    src = PrometheusSource(state["url"], timeout_s=2.0, unix_time=lambda: NOW_UNIX_S)
    return src, src.read([TARGET], 0.0, 60.0)[TARGET.key]


def _series(labels: dict, value: float) -> dict:
    return {"metric": labels, "value": [NOW_UNIX_S, repr(value)]}


def test_no_series_at_all_is_empty_not_failed(prometheus):
    """No pod up: every query answers [] -> each expected group missing AND empty."""
    src, snap = _read(prometheus)
    assert src.last_errors == []
    assert snap.missing == frozenset(EXPECTED)
    assert snap.empty == frozenset(EXPECTED)
    assert snap.unread == frozenset()


def test_a_failed_query_is_missing_but_not_empty(prometheus):
    """The arrival query fails (HTTP 422), the others answer other targets' series only."""
    prometheus["answers"] = [(n.BY_NAME[n.REQUESTS].exposed[0], "fail"),
                             ("", [_series(OTHER, 1.0)])]
    src, snap = _read(prometheus)
    assert src.last_errors == ["QueryFailed"]
    assert FIELD_ARRIVAL_RATE in snap.missing and FIELD_ARRIVAL_RATE not in snap.empty
    assert snap.unread == frozenset({FIELD_ARRIVAL_RATE})
    assert snap.empty == frozenset(EXPECTED) - {FIELD_ARRIVAL_RATE}


def test_a_series_read_is_neither_missing_nor_empty_and_nan_is_not_empty(prometheus):
    mine = {"model": "m"}
    prometheus["answers"] = [
        ("avg_over_time(" + n.QUEUE_DEPTH, [_series(mine, 3.0)]),
        ("avg_over_time(" + n.IN_FLIGHT, [_series(mine, float("nan"))]),
        ("count by", [_series(mine, 2.0)]),
    ]
    _, snap = _read(prometheus)
    assert snap.queue_depth == 3.0 and snap.ready_replicas == 2
    assert FIELD_QUEUE_DEPTH not in snap.missing and FIELD_REPLICAS not in snap.missing
    # NaN is a series with a value that cannot be used: missing, not "no series".
    assert FIELD_IN_FLIGHT in snap.missing and FIELD_IN_FLIGHT not in snap.empty
    assert {FIELD_ARRIVAL_RATE, FIELD_LATENCY} <= snap.empty
