"""Per-collector health (node_exporter style): success, duration, last success and errors by type."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from trimtab.collectors import names


@dataclass
class _Record:
    success: float = 0.0
    duration_s: float = 0.0
    last_success_unix_s: float | None = None
    errors: Counter = field(default_factory=Counter)


class CollectorHealth(Collector):
    """One place every collector reports to, so each health family is exported exactly once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}

    def declare(self, collector: str) -> None:
        """Make the collector's series exist (success 0) before its first poll."""
        with self._lock:
            self._records.setdefault(collector, _Record())

    def forget(self, collector: str) -> None:
        """Stop exporting a collector (one disabled on purpose is not a failing one)."""
        with self._lock:
            self._records.pop(collector, None)

    def record(self, collector: str, *, ok: bool, duration_s: float, now_unix_s: float,
               errors: tuple[str, ...] = ()) -> None:
        with self._lock:
            rec = self._records.setdefault(collector, _Record())
            rec.success = 1.0 if ok else 0.0
            rec.duration_s = duration_s
            if ok:
                rec.last_success_unix_s = now_unix_s
            rec.errors.update(errors)

    def count_error(self, collector: str, error: str) -> None:
        with self._lock:
            self._records.setdefault(collector, _Record()).errors[error] += 1

    def success(self, collector: str) -> float:
        with self._lock:
            rec = self._records.get(collector)
            return rec.success if rec else 0.0

    def errors(self, collector: str) -> dict[str, int]:
        with self._lock:
            rec = self._records.get(collector)
            return dict(rec.errors) if rec else {}

    def collect(self) -> Iterator:
        success = GaugeMetricFamily(names.COLLECTOR_SUCCESS, names.BY_NAME[names.COLLECTOR_SUCCESS].help,
                                    labels=["collector"])
        duration = GaugeMetricFamily(names.COLLECTOR_DURATION,
                                     names.BY_NAME[names.COLLECTOR_DURATION].help,
                                     labels=["collector"])
        last = GaugeMetricFamily(names.COLLECTOR_LAST_SUCCESS,
                                 names.BY_NAME[names.COLLECTOR_LAST_SUCCESS].help,
                                 labels=["collector"])
        errors = CounterMetricFamily(names.COLLECTOR_ERRORS, names.BY_NAME[names.COLLECTOR_ERRORS].help,
                                     labels=["collector", "error"])
        with self._lock:
            for name, rec in sorted(self._records.items()):
                success.add_metric([name], rec.success)
                duration.add_metric([name], rec.duration_s)
                if rec.last_success_unix_s is not None:
                    last.add_metric([name], rec.last_success_unix_s)
                for error, count in sorted(rec.errors.items()):
                    errors.add_metric([name, error], count)
        yield from (success, duration, last, errors)
