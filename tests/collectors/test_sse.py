"""The SSE timer: first token and inter-token gaps from the chunks a proxy forwards."""
from __future__ import annotations

import pytest

from trimtab.collectors.sse import SseTimer


def fed(chunks: list[tuple[float, bytes]], started_s: float = 0.0, **kw) -> tuple[SseTimer, list]:
    timer, gaps = SseTimer(started_s=started_s, **kw), []
    for t, c in chunks:
        timer.feed(c, t)
        gaps.extend(timer.gaps_s)
    return timer, gaps


@pytest.mark.parametrize("chunks, ttft, gaps", [
    # one event per chunk
    ([(0.5, b"data: a\n\n"), (0.6, b"data: b\n\n"), (0.8, b"data: c\n\n")], 0.5, [0.1, 0.2]),
    # an event split over chunks counts when its blank line arrives
    ([(0.5, b"data: a"), (0.7, b"\n\n"), (0.9, b"data: b\n"), (1.0, b"\n")], 0.7, [0.3]),
    # CRLF line ends
    ([(0.2, b"data: a\r\n\r\n"), (0.3, b"data: b\r\n\r\n")], 0.2, [0.1]),
    # two events in one chunk share the gap since the previous chunk
    ([(0.2, b"data: a\n\n"), (0.6, b"data: b\n\ndata: c\n\n")], 0.2, [0.2, 0.2]),
    # comments, event-only keep-alives and [DONE] are no tokens
    ([(0.1, b": ping\n\n"), (0.2, b"event: keepalive\n\n"), (0.4, b"data: a\n\n"),
      (0.5, b"data: [DONE]\n\n")], 0.4, []),
    # multi-line data is one event
    ([(0.3, b"id: 1\ndata: a\ndata: b\n\n"), (0.4, b"data: c\n\n")], 0.3, [0.1]),
    # nothing that is SSE
    ([(0.3, b'{"text": "all at once"}')], None, []),
], ids=["per-chunk", "split", "crlf", "two-in-one", "not-tokens", "multiline", "not-sse"])
def test_ttft_and_gaps(chunks, ttft, gaps):
    timer, seen = fed(chunks)
    assert timer.ttft_s == (pytest.approx(ttft) if ttft is not None else None)
    assert seen == pytest.approx(gaps)


def test_ttft_counts_from_the_request_not_the_first_byte():
    timer, _ = fed([(10.4, b"data: a\n\n")], started_s=10.0)
    assert timer.ttft_s == pytest.approx(0.4)


def test_an_event_that_never_ends_stops_the_timing_and_keeps_no_memory():
    timer, gaps = fed([(0.1, b"data: " + b"x" * 2000), (0.2, b"y" * 2000),
                       (0.3, b"\n\ndata: b\n\n")], max_event_bytes=1000)
    assert timer.ttft_s is None and gaps == [] and timer._tail == b""
