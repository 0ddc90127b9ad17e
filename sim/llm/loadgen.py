"""An open-loop load generator for an OpenAI-compatible server (vLLM), timing every token.

Each request is a streaming ``/v1/completions`` call whose prompt is a list of token ids (so
its length in tokens is exact; the server's ``usage.prompt_tokens`` is checked against it) with
``max_tokens`` and ``ignore_eos`` (so it makes exactly that many tokens), sent at its scheduled
time whatever the server is doing. Per request the record keeps the actual send time, the
arrival time of every token (``return_token_ids`` says how many tokens each chunk carries; a
chunk of k tokens gives k equal times) and the server's counts. Meanwhile ``/metrics`` is
sampled for the running and waiting gauges, and read whole before and after. All times are
``time.monotonic()`` seconds (CLOCK_MONOTONIC, shared with the server's processes).
"""
from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

RESERVED_TOKEN_IDS = 3          # ids 0..2 are the tokenizer's <unk>, <s>, </s>


@dataclass
class RequestRecord:
    """What the client saw of one request (times in monotonic seconds)."""

    index: int
    scheduled_s: float
    prompt_tokens: int
    output_tokens: int
    sent_s: float = math.nan
    token_s: list[float] = field(default_factory=list)
    usage_prompt_tokens: int = -1
    usage_completion_tokens: int = -1
    error: str = ""

    @property
    def ok(self) -> bool:
        return (not self.error and len(self.token_s) == self.output_tokens
                and self.usage_prompt_tokens == self.prompt_tokens)

    def to_dict(self) -> dict:
        return {"index": self.index, "scheduled_s": self.scheduled_s,
                "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
                "sent_s": self.sent_s, "token_s": self.token_s,
                "usage_prompt_tokens": self.usage_prompt_tokens,
                "usage_completion_tokens": self.usage_completion_tokens, "error": self.error}


@dataclass
class RunRecord:
    """One run of a stream: the requests, the gauge samples and /metrics before and after."""

    t0_s: float
    requests: list[RequestRecord]
    gauge_t_s: list[float] = field(default_factory=list)
    gauge_running: list[float] = field(default_factory=list)
    gauge_waiting: list[float] = field(default_factory=list)
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def metric_delta(self, name: str) -> float:
        return self.metrics_after.get(name, 0.0) - self.metrics_before.get(name, 0.0)


# --------------------------------------------------------------------------- /metrics
def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format to ``{name{labels}: value}``; series of the same name and
    labels other than ``engine``/``model_name`` kept apart, those two dropped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        try:
            key, value = line.rsplit(" ", 1)
            v = float(value)
        except ValueError:
            continue
        if "{" in key:
            name, labels = key.split("{", 1)
            kept = [p for p in labels.rstrip("}").split(",")
                    if p and not p.startswith(("engine=", "model_name="))]
            key = name + ("{" + ",".join(kept) + "}" if kept else "")
        out[key] = out.get(key, 0.0) + v
    return out


async def _get_metrics(session, base_url: str) -> dict[str, float]:
    async with session.get(f"{base_url}/metrics") as resp:
        return parse_metrics(await resp.text())


# --------------------------------------------------------------------------- requests
def prompt_ids(rng: np.random.Generator, n: int, vocab_size: int) -> list[int]:
    """``n`` random token ids, none of them special."""
    return [int(x) for x in rng.integers(RESERVED_TOKEN_IDS, vocab_size, size=n)]


def request_id(index: int) -> str:
    """The ``X-Request-Id`` of request ``index``; vLLM's engine-side id contains it."""
    return f"ttreq{index:05d}x"


async def _one(session, url: str, model: str, rec: RequestRecord, prompt: list[int],
               timeout_s: float) -> None:
    import aiohttp

    body = {"model": model, "prompt": prompt, "max_tokens": rec.output_tokens,
            "min_tokens": rec.output_tokens, "ignore_eos": True, "temperature": 0.0,
            "stream": True, "return_token_ids": True,
            "stream_options": {"include_usage": True}}
    rec.sent_s = time.monotonic()
    try:
        async with session.post(url, json=body, headers={"X-Request-Id": request_id(rec.index)},
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                rec.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return
            buf = b""
            async for chunk in resp.content.iter_any():
                now = time.monotonic()
                buf += chunk
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    for line in event.split(b"\n"):
                        if not line.startswith(b"data: ") or line == b"data: [DONE]":
                            continue
                        doc = json.loads(line[6:])
                        for choice in doc.get("choices") or ():
                            n_tok = len(choice.get("token_ids") or ())
                            rec.token_s.extend([now] * n_tok)
                        usage = doc.get("usage")
                        if usage:
                            rec.usage_prompt_tokens = int(usage.get("prompt_tokens", -1))
                            rec.usage_completion_tokens = int(usage.get("completion_tokens",
                                                                        -1))
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"


async def _sample_gauges(session, base_url: str, run: RunRecord, period_s: float,
                         stop: asyncio.Event) -> None:
    while not stop.is_set():
        t = time.monotonic()
        try:
            m = await _get_metrics(session, base_url)
        except Exception:                          # a missed sample is only a missed sample
            m = None
        if m is not None:
            run.gauge_t_s.append(t)
            run.gauge_running.append(m.get("vllm:num_requests_running", math.nan))
            run.gauge_waiting.append(m.get("vllm:num_requests_waiting", math.nan))
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, period_s
                                                            - (time.monotonic() - t)))
        except asyncio.TimeoutError:
            pass


async def run_stream_async(base_url: str, model: str, arrival_s: np.ndarray,
                           prompt_tokens: np.ndarray, output_tokens: np.ndarray, *,
                           vocab_size: int, seed: int = 0, gauge_period_s: float = 0.1,
                           timeout_s: float = 600.0, lead_s: float = 0.2) -> RunRecord:
    """Send request ``i`` at ``t0 + arrival_s[i]`` (t0: now + ``lead_s``), open loop."""
    import aiohttp

    rng = np.random.default_rng(seed)
    prompts = [prompt_ids(rng, int(p), vocab_size) for p in prompt_tokens]
    url = f"{base_url}/v1/completions"
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        before = await _get_metrics(session, base_url)
        t0 = time.monotonic() + lead_s
        recs = [RequestRecord(i, float(arrival_s[i]), int(prompt_tokens[i]),
                              int(output_tokens[i])) for i in range(len(arrival_s))]
        run = RunRecord(t0_s=t0, requests=recs, metrics_before=before)
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_gauges(session, base_url, run, gauge_period_s,
                                                     stop))
        tasks = []
        for rec, prompt in zip(recs, prompts):
            delay = t0 + rec.scheduled_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(session, url, model, rec, prompt,
                                                  timeout_s)))
        await asyncio.gather(*tasks)
        stop.set()
        await sampler
        run.metrics_after = await _get_metrics(session, base_url)
        run.wall_s = time.monotonic() - t0
    return run


def run_stream(base_url: str, model: str, arrival_s: np.ndarray, prompt_tokens: np.ndarray,
               output_tokens: np.ndarray, **kwargs) -> RunRecord:
    """``run_stream_async`` in a fresh event loop (uvloop is not needed)."""
    return asyncio.run(run_stream_async(base_url, model, arrival_s, prompt_tokens,
                                        output_tokens, **kwargs))


# --------------------------------------------------------------------------- derived
def request_figures(run: RunRecord) -> dict[str, np.ndarray]:
    """Per request, relative to the run's t0: ``arrival_s`` (actual send), TTFT, TPOT, e2e
    (NaN for a request that failed); ``gaps_s``: every inter-token gap of all requests."""
    n = len(run.requests)
    arrival = np.full(n, np.nan)
    ttft = np.full(n, np.nan)
    tpot = np.full(n, np.nan)
    e2e = np.full(n, np.nan)
    gaps: list[np.ndarray] = []
    for i, r in enumerate(run.requests):
        arrival[i] = r.sent_s - run.t0_s
        if not r.ok:
            continue
        t = np.asarray(r.token_s)
        ttft[i] = t[0] - r.sent_s
        e2e[i] = t[-1] - r.sent_s
        if len(t) > 1:
            tpot[i] = (t[-1] - t[0]) / (len(t) - 1)
            gaps.append(np.diff(t))
    return {"arrival_s": arrival, "ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e,
            "gaps_s": np.concatenate(gaps) if gaps else np.zeros(0)}
