"""The demo model: a small numpy MLP served by Ray Serve with ``@serve.batch``.

The MLP runs for real on the CPU. Its batch time is then padded (an ``await``, as a server
waits on its accelerator) up to an affine device-time model ``base_ms + per_item_ms * b``:
a stand-in for a GPU, where batch time grows with batch size like a real one, and the
replicas do not steal each other's CPU on a 2-core machine (which would make the time
depend on how many replicas run, as no GPU server's does).
"""
from __future__ import annotations

import asyncio
import os

import numpy as np
from ray import serve
from ray.serve import metrics as serve_metrics
from starlette.requests import Request
from starlette.responses import JSONResponse

from trimtab.up import wall_clock
from trimtab.collectors.ray_batching import TrimtabBatching

# Defaults of the demo fleet (the orchestration overrides them through user_config).
BASE_MS = 40.0
PER_ITEM_MS = 60.0
MAX_BATCH_SIZE = 4
BATCH_WAIT_TIMEOUT_S = 0.005
BATCH_SIZE_METRIC = "trimtab_model_batch_size"
BATCH_DURATION_METRIC = "trimtab_model_batch_duration_seconds"
BATCH_ITEMS_METRIC = "trimtab_model_batch_items"
BATCH_SECONDS_METRIC = "trimtab_model_batch_seconds"
INPUT_DIM = 64
HIDDEN_DIM = 128
OUTPUT_DIM = 10


def affine_batch_s(batch_size: int, base_ms: float = BASE_MS,
                   per_item_ms: float = PER_ITEM_MS) -> float:
    """Device time of one batch: 40 ms + 60 ms per item -> 4 items take 280 ms."""
    return (base_ms + per_item_ms * batch_size) / 1000.0


class Mlp:
    """A two-layer ReLU MLP with fixed random weights (seeded, so every replica agrees)."""

    def __init__(self, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.w1 = rng.standard_normal((INPUT_DIM, HIDDEN_DIM)).astype(np.float32) * 0.1
        self.w2 = rng.standard_normal((HIDDEN_DIM, OUTPUT_DIM)).astype(np.float32) * 0.1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ self.w1, 0.0) @ self.w2


def features(item: object) -> np.ndarray:
    """One request body -> an input row: ``{"x": [..64 floats..]}`` or a seed integer."""
    if isinstance(item, dict) and isinstance(item.get("x"), list):
        row = np.asarray(item["x"], dtype=np.float32)[:INPUT_DIM]
        return np.pad(row, (0, INPUT_DIM - row.size))
    seed = int(item.get("seed", 0)) if isinstance(item, dict) else 0
    return np.random.default_rng(seed).standard_normal(INPUT_DIM).astype(np.float32)


@serve.deployment(
    name="mlp",
    num_replicas=1,
    max_ongoing_requests=16,
    ray_actor_options={"num_cpus": 0.25},
    health_check_period_s=2,
    graceful_shutdown_timeout_s=2,
    graceful_shutdown_wait_loop_s=0.5,
)
class MlpModel(TrimtabBatching):
    """The served model; ``reconfigure`` (from TrimtabBatching) sets its batch size live."""

    trimtab_batch_methods = ("predict",)

    def __init__(self) -> None:
        self.mlp = Mlp()
        # The fleet passes the device-time model through the replica's environment.
        self.base_ms = float(os.environ.get("TRIMTAB_BASE_MS", BASE_MS))
        self.per_item_ms = float(os.environ.get("TRIMTAB_PER_ITEM_MS", PER_ITEM_MS))
        ctx = serve.get_replica_context()
        self.replica_id = ctx.replica_id.unique_id if ctx is not None else str(os.getpid())
        # Exported by Ray's metrics agent (as ray_trimtab_model_batch_*), scraped by the live
        # Prometheus; the fidelity fit reads the service model from them.
        self.batch_size_hist = serve_metrics.Histogram(
            BATCH_SIZE_METRIC, description="Requests per executed batch (demo model).",
            boundaries=[1, 2, 3, 4, 6, 8, 12, 16, 24, 32])
        self.batch_duration_hist = serve_metrics.Histogram(
            BATCH_DURATION_METRIC, description="Execution time of one batch (demo model).",
            boundaries=[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0])
        # Counters for sums: Ray's histogram _sum is rebuilt from bucket midpoints.
        self.batch_items = serve_metrics.Counter(
            BATCH_ITEMS_METRIC, description="Items executed in batches (demo model).")
        self.batch_seconds = serve_metrics.Counter(
            BATCH_SECONDS_METRIC, description="Seconds spent executing batches (demo model).")

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S)
    async def predict(self, items: list[object]) -> list[dict]:
        start_s = wall_clock.perf_s()
        out = self.mlp(np.stack([features(i) for i in items]))
        target_s = affine_batch_s(len(items), self.base_ms, self.per_item_ms)
        pad_s = target_s - (wall_clock.perf_s() - start_s)
        if pad_s > 0:
            await asyncio.sleep(pad_s)
        batch_s = wall_clock.perf_s() - start_s
        self.batch_size_hist.observe(len(items))
        self.batch_duration_hist.observe(batch_s)
        self.batch_items.inc(len(items))
        self.batch_seconds.inc(batch_s)
        limit = self.predict._get_max_batch_size()
        return [{"class": int(np.argmax(row)), "batch_size": len(items), "batch_s": batch_s,
                 "max_batch_size": limit, "replica": self.replica_id, "pid": os.getpid()}
                for row in out]

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        return JSONResponse(await self.predict(body))


app = MlpModel.bind()
