"""Applies batch settings to Triton (explicit model control): read config, change batching, reload.

Triton replaces a model's stored config with the one posted to
``POST /v2/repository/models/{m}/load`` as ``{"parameters": {"config": "<json>"}}``, so the
current config is read first (``GET /v2/models/{m}/config``) and only ``max_batch_size`` and
``dynamic_batching.max_queue_delay_microseconds`` are changed. A reload takes seconds, so
applies are rate-limited (coalesced: the newest settings win) and run in the background.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from urllib.parse import quote

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from trimtab.collectors import names
from trimtab.collectors.settings import ControlSettings

log = logging.getLogger(__name__)
RESULTS = ("ok", "error", "unsupported")


def with_batch_settings(config: dict, settings: ControlSettings) -> dict | None:
    """The model config with the new batch settings; None if the model cannot batch.

    ``max_batch_size: 0`` in Triton means the model takes no batch dimension, so there is
    nothing to set. Preferred batch sizes above the new maximum are dropped (Triton rejects them).
    """
    if not isinstance(config, dict):
        raise ValueError("model config is not a JSON object")
    if int(config.get("max_batch_size", 0)) <= 0:
        return None
    new = dict(config)
    new["max_batch_size"] = settings.max_batch_size
    batching = dict(new.get("dynamic_batching") or {})
    batching["max_queue_delay_microseconds"] = int(round(settings.batch_timeout_ms * 1000))
    preferred = [int(p) for p in batching.get("preferred_batch_size") or []
                 if int(p) <= settings.max_batch_size]
    if "preferred_batch_size" in batching:
        batching["preferred_batch_size"] = preferred
    new["dynamic_batching"] = batching
    return new


class TritonBatchApplier:
    """Background, rate-limited application of batch settings to every configured model."""

    def __init__(self, upstream: str, models: tuple[str, ...], registry: CollectorRegistry, *,
                 min_interval_s: float = 30.0, timeout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._upstream = upstream.rstrip("/")
        self._models = models
        self._min_interval_s = min_interval_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._desired: ControlSettings | None = None
        self._last_at: float | None = None
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self.applies = Counter(names.TRITON_CONFIG_APPLIES,
                               names.BY_NAME[names.TRITON_CONFIG_APPLIES].help,
                               ["model", "result"], registry=registry)
        self.last_error: str = ""

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout_s))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._session is not None:
            await self._session.close()

    def request(self, settings: ControlSettings) -> None:
        """Queue settings for Triton; returns at once (a reload takes seconds)."""
        self._desired = settings
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._worker())

    async def wait_idle(self) -> None:
        """Until every queued apply has been sent (tests and shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _worker(self) -> None:
        while self._desired is not None:
            if self._last_at is not None:
                wait_s = self._last_at + self._min_interval_s - self._clock()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
            settings, self._desired = self._desired, None
            self._last_at = self._clock()
            for model in self._models:
                await self.apply_model(model, settings)

    async def apply_model(self, model: str, settings: ControlSettings) -> str:
        """One read-modify-load cycle for one model; returns and counts the result."""
        assert self._session is not None, "start() first"
        base = f"{self._upstream}/v2"
        name = quote(model, safe="")
        try:
            async with self._session.get(f"{base}/models/{name}/config") as resp:
                if resp.status != 200:
                    raise ValueError(f"GET config -> {resp.status}: {await resp.text()}")
                config = await resp.json(content_type=None)
            new = with_batch_settings(config, settings)
            if new is None:
                self.applies.labels(model, "unsupported").inc()
                log.warning("Triton model %s has max_batch_size 0 (no batching); "
                            "batch settings not applied", model)
                return "unsupported"
            body = {"parameters": {"config": json.dumps(new)}}
            async with self._session.post(f"{base}/repository/models/{name}/load",
                                          json=body) as resp:
                if resp.status != 200:
                    raise ValueError(f"POST load -> {resp.status}: {await resp.text()}")
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
            self.last_error = f"{model}: {type(exc).__name__}: {exc}"
            log.error("applying batch settings to Triton failed: %s", self.last_error)
            self.applies.labels(model, "error").inc()
            return "error"
        self.applies.labels(model, "ok").inc()
        log.info("Triton model %s reloaded with max_batch_size=%d, max_queue_delay=%d us",
                 model, settings.max_batch_size, int(round(settings.batch_timeout_ms * 1000)))
        return "ok"
