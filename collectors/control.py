"""The pod-level knobs in force: applied to the admission proxy at once and exported as gauges."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from trimtab.collectors import names
from trimtab.collectors.admission import Admission
from trimtab.collectors.settings import ControlSettings
from trimtab.common.errors import first_error

log = logging.getLogger(__name__)
CONTROL_RESULTS = ("ok", "unauthorized", "invalid", "error")
FIELDS = tuple(ControlSettings.model_fields)


class InvalidSettings(ValueError):
    """A control request that breaks a rule; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ControlState:
    """Holds the settings in force; ``update`` validates a partial change and applies it."""

    def __init__(self, initial: ControlSettings, models: tuple[str, ...],
                 registry: CollectorRegistry, admission: Admission | None = None,
                 batch_hook: Callable[[ControlSettings], Awaitable[None] | None] | None = None
                 ) -> None:
        self.settings = initial
        self._models = models
        self._admission = admission
        # What ``queue_timeout_s: null`` goes back to: the wait the proxy was started with.
        self._started_wait_s = admission.queue_timeout_s if admission is not None else None
        self._batch_hook = batch_hook
        self._g_limit = Gauge(names.CONCURRENCY_LIMIT, names.BY_NAME[names.CONCURRENCY_LIMIT].help,
                              registry=registry)
        self._g_batch = Gauge(names.MAX_BATCH_SIZE, names.BY_NAME[names.MAX_BATCH_SIZE].help,
                              ["model"], registry=registry)
        self._g_timeout = Gauge(names.BATCH_TIMEOUT, names.BY_NAME[names.BATCH_TIMEOUT].help,
                                ["model"], registry=registry)
        self._g_wait = Gauge(names.QUEUE_TIMEOUT, names.BY_NAME[names.QUEUE_TIMEOUT].help,
                             registry=registry)
        self.requests = Counter(names.CONTROL_REQUESTS, names.BY_NAME[names.CONTROL_REQUESTS].help,
                                ["result"], registry=registry)
        for r in CONTROL_RESULTS:
            self.requests.labels(r)
        self._apply_admission(initial)
        self._export()

    def _apply_admission(self, s: ControlSettings) -> None:
        """The proxy's limit and admission wait, from the settings in force."""
        if self._admission is None:
            return
        self._admission.set_limit(s.concurrency_limit)
        if s.queue_timeout_s is not None:
            self._admission.set_queue_timeout_s(s.queue_timeout_s)

    def _export(self) -> None:
        s = self.settings
        self._g_limit.set(s.concurrency_limit)
        # The proxy's own wait is what is in force (the settings may leave it as started).
        wait_s = (self._admission.queue_timeout_s if self._admission is not None
                  else s.queue_timeout_s)
        if wait_s is not None:
            self._g_wait.set(wait_s)
        for m in self._models:
            self._g_batch.labels(m).set(s.max_batch_size)
            self._g_timeout.labels(m).set(s.batch_timeout_ms / 1000.0)

    @staticmethod
    def parse_change(body: object) -> dict:
        """Validate a (partial) JSON change; raises InvalidSettings naming the field."""
        if not isinstance(body, dict):
            raise InvalidSettings("body", "body must be a JSON object with some of "
                                          f"{', '.join(FIELDS)}")
        for key in body:
            if key not in FIELDS:
                raise InvalidSettings(key, f"unknown field {key!r}; allowed: {', '.join(FIELDS)}")
        if not body:
            raise InvalidSettings("body", f"empty change; give at least one of {', '.join(FIELDS)}")
        return body

    def merged(self, change: dict) -> ControlSettings:
        """The settings after ``change``; ``queue_timeout_s: null`` means the wait as started."""
        if "queue_timeout_s" in change and change["queue_timeout_s"] is None:
            change = {**change, "queue_timeout_s": self._started_wait_s}
        try:
            return ControlSettings(**{**self.settings.model_dump(), **change})
        except ValidationError as exc:
            field, message = first_error(exc, top="body")
            raise InvalidSettings(field, message) from None

    async def update(self, body: object) -> ControlSettings:
        """Validate, apply to the proxy at once, then hand batch settings to the hook."""
        new = self.merged(self.parse_change(body))
        old, self.settings = self.settings, new
        self._apply_admission(new)
        self._export()
        if self._batch_hook is not None and (
                old.max_batch_size != new.max_batch_size
                or old.batch_timeout_ms != new.batch_timeout_ms):
            result = self._batch_hook(new)
            if result is not None:
                await result
        log.info("control settings now %s", new.model_dump())
        return new
