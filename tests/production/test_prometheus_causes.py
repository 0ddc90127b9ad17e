"""A Prometheus that answers 500 or HTML: the controller logs why, once, and holds."""
from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry

from trimtab.common.prometheus import PromClient, QueryFailed
from trimtab.controllers.shell.actuators.base import WorkloadRef
from trimtab.controllers.shell.clock import ManualClock
from trimtab.controllers.shell.loop import ControlLoop, Target
from trimtab.controllers.shell.metrics import ControllerMetrics
from trimtab.controllers.shell.sources.base import TargetSelector
from trimtab.controllers.shell.sources.prometheus import PrometheusSource
from tests.production.conftest import BOUNDS, ScriptedPolicy

# (status, content type, body) the stand-in "Prometheus" answers every query with.
ANSWERS = {
    "500-html": (500, "text/html", b"<html><body><h1>Internal Server Error</h1></body></html>"),
    "200-html": (200, "text/html", b"<!DOCTYPE html><title>Sign in</title>"),
    "502-text": (502, "text/plain", b"upstream connect error"),
}


@pytest.fixture
def answering() -> Iterator[dict]:
    state = {"answer": ANSWERS["500-html"]}

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            if self.command == "POST":
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
            code, kind, body = state["answer"]
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _reply

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_port}"
    yield state
    server.shutdown()


@pytest.mark.parametrize("case, words", [
    ("500-html", ("HTTP 500", "text/html", "Internal Server Error")),
    ("200-html", ("HTTP 200", "text/html", "Sign in", "not Prometheus' JSON")),
    ("502-text", ("HTTP 502", "upstream connect error")),
], ids=list(ANSWERS))
def test_the_failed_query_says_what_answered(answering, case: str, words: tuple) -> None:
    answering["answer"] = ANSWERS[case]
    with pytest.raises(QueryFailed) as err:
        PromClient(answering["url"], 2.0).instant("up")
    for w in words:
        assert w in str(err.value)


def test_the_loop_logs_the_cause_once_and_holds(answering, caplog) -> None:
    src = PrometheusSource(answering["url"], timeout_s=2.0)
    clock = ManualClock(1000.0)
    target = Target(WorkloadRef("Deployment", "ns", "m"), TargetSelector("m", {"model": "m"}),
                    ScriptedPolicy(replicas=5), bounds=BOUNDS)
    loop = ControlLoop([target], src, [], clock, ControllerMetrics(CollectorRegistry()),
                       interval_s=15.0)
    with caplog.at_level(logging.INFO, logger="trimtab"):
        for k in range(3):
            clock.advance(15.0)
            (rec,) = loop.tick(clock.now_s())
            assert rec.decision.reason.startswith("hold"), rec.decision.reason
        warned = [r.getMessage() for r in caplog.records if "queries failed" in r.getMessage()]
        assert len(warned) == 1, warned          # not once per tick
        assert "HTTP 500" in warned[0] and "Internal Server Error" in warned[0]
