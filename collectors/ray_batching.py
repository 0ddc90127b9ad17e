"""A mixin for Ray Serve deployments: apply trimtab's batch settings from ``user_config``.

Add it to a deployment whose handler is decorated with ``@serve.batch`` and trimtab's Ray
Serve actuator can change the batch size and wait timeout of running replicas in place
(Ray Serve calls ``reconfigure`` on a ``user_config`` change; the replica is not restarted)::

    from trimtab.collectors.ray_batching import TrimtabBatching

    @serve.deployment(user_config={"trimtab": {"max_batch_size": 8}})
    class Model(TrimtabBatching):
        trimtab_batch_methods = ("predict",)

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
        async def predict(self, items): ...

        async def __call__(self, request): return await self.predict(await request.json())

The settings live under the ``"trimtab"`` key so the deployment's own ``user_config`` keys
are left to it; a subclass that needs its own ``reconfigure`` calls ``super().reconfigure``.
This module does not import Ray: it only calls the setters ``@serve.batch`` attaches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from trimtab.collectors.names import (RAY_BATCH_WAIT_TIMEOUT_KEY, RAY_MAX_BATCH_SIZE_KEY,
                                      RAY_USER_CONFIG_KEY)


class BatchConfigError(ValueError):
    """A ``user_config["trimtab"]`` value that cannot be applied; names the field and rule."""


@dataclass(frozen=True)
class BatchSettings:
    """The batch settings trimtab sends; ``None`` leaves a setting as it is."""

    max_batch_size: int | None = None
    batch_wait_timeout_s: float | None = None

    def to_user_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.max_batch_size is not None:
            out[RAY_MAX_BATCH_SIZE_KEY] = int(self.max_batch_size)
        if self.batch_wait_timeout_s is not None:
            out[RAY_BATCH_WAIT_TIMEOUT_KEY] = float(self.batch_wait_timeout_s)
        return out


def parse_batch_settings(user_config: Mapping[str, Any] | None) -> BatchSettings:
    """Read and check ``user_config["trimtab"]``; a missing key means 'change nothing'."""
    if not user_config:
        return BatchSettings()
    section = user_config.get(RAY_USER_CONFIG_KEY)
    if section is None:
        return BatchSettings()
    if not isinstance(section, Mapping):
        raise BatchConfigError(
            f"user_config[{RAY_USER_CONFIG_KEY!r}] = {section!r}: must be a mapping")
    unknown = set(section) - {RAY_MAX_BATCH_SIZE_KEY, RAY_BATCH_WAIT_TIMEOUT_KEY}
    if unknown:
        raise BatchConfigError(
            f"user_config[{RAY_USER_CONFIG_KEY!r}]: unknown key(s) {sorted(unknown)}; known:"
            f" {[RAY_MAX_BATCH_SIZE_KEY, RAY_BATCH_WAIT_TIMEOUT_KEY]}")
    size = section.get(RAY_MAX_BATCH_SIZE_KEY)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise BatchConfigError(
            f"user_config[{RAY_USER_CONFIG_KEY!r}][{RAY_MAX_BATCH_SIZE_KEY!r}] = {size!r}:"
            " must be an integer >= 1")
    timeout_s = section.get(RAY_BATCH_WAIT_TIMEOUT_KEY)
    if timeout_s is not None and (isinstance(timeout_s, bool)
                                  or not isinstance(timeout_s, (int, float))
                                  or not math.isfinite(timeout_s) or timeout_s < 0):
        raise BatchConfigError(
            f"user_config[{RAY_USER_CONFIG_KEY!r}][{RAY_BATCH_WAIT_TIMEOUT_KEY!r}] = {timeout_s!r}:"
            " must be a finite number >= 0")
    return BatchSettings(size, None if timeout_s is None else float(timeout_s))


def apply_batch_settings(target: Any, method_names: tuple[str, ...],
                         settings: BatchSettings) -> None:
    """Call ``set_max_batch_size`` / ``set_batch_wait_timeout_s`` on each named method."""
    for name in method_names:
        method = getattr(target, name, None)
        if method is None or not hasattr(method, "set_max_batch_size"):
            raise BatchConfigError(
                f"{type(target).__name__}.{name}: not a @serve.batch method (it has no"
                " set_max_batch_size); list the batched methods in trimtab_batch_methods")
        if settings.max_batch_size is not None:
            method.set_max_batch_size(settings.max_batch_size)
        if settings.batch_wait_timeout_s is not None:
            method.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)


def current_batch_settings(target: Any, method_name: str) -> BatchSettings:
    """The settings a ``@serve.batch`` method runs with now (for health checks and tests)."""
    method = getattr(target, method_name)
    return BatchSettings(int(method._get_max_batch_size()),
                         float(method._get_batch_wait_timeout_s()))


class TrimtabBatching:
    """Mixin: ``reconfigure(user_config)`` applies ``user_config["trimtab"]`` in place."""

    trimtab_batch_methods: tuple[str, ...] = ("__call__",)

    def reconfigure(self, user_config: Mapping[str, Any] | None) -> None:
        settings = parse_batch_settings(user_config)
        apply_batch_settings(self, tuple(self.trimtab_batch_methods), settings)
        self.trimtab_batch_settings = settings
