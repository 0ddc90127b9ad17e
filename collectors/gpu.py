"""GPU collector: NVML (injected) polled in a background thread, served from a cache on scrape."""
from __future__ import annotations

import math

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from trimtab.collectors import names
from trimtab.collectors.health import CollectorHealth

log = logging.getLogger(__name__)

COLLECTOR = "gpu"
MAX_PROCESSES_PER_GPU = 8
_THROTTLE_REASONS = {
    "gpu_idle": 0x1, "applications_clocks_setting": 0x2, "sw_power_cap": 0x4,
    "hw_slowdown": 0x8, "sync_boost": 0x10, "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40, "hw_power_brake_slowdown": 0x80,
}
# Gauges read per device: metric name -> function of (nvml, handle) in base units.
_GAUGES: tuple[str, ...] = (
    names.GPU_MEMORY_USED, names.GPU_MEMORY_TOTAL, names.GPU_MEMORY_RESERVED,
    names.GPU_UTILIZATION, names.GPU_MEMORY_UTILIZATION, names.GPU_POWER, names.GPU_POWER_LIMIT,
    names.GPU_TEMPERATURE)


@dataclass
class GpuReading:
    """One device (GPU or MIG instance) as of one poll; a missing key means NotSupported."""

    gpu: str
    uuid: str
    name: str
    up: bool
    values: dict[str, float] = field(default_factory=dict)
    energy_joules: float | None = None
    throttle: dict[str, int] = field(default_factory=dict)
    processes: dict[str, float] = field(default_factory=dict)


@dataclass
class GpuSnapshot:
    taken_at_s: float                      # monotonic
    readings: list[GpuReading]
    driver_version: str = ""


class GpuCollector(Collector):
    """client_python collector: ``collect()`` yields fresh families from the last poll."""

    def __init__(self, nvml: Any | None, health: CollectorHealth, *, poll_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 max_backoff_s: float = 60.0) -> None:
        self._nvml = nvml
        self._health = health
        self.poll_s = poll_s
        self._clock = clock
        self._wall = wall_clock
        self._max_backoff_s = max_backoff_s
        self._snapshot: GpuSnapshot | None = None
        self._initialised = False
        self.enabled = nvml is not None
        self.disabled_reason = "" if nvml is not None else "--gpu off"
        self._backoff_s = 0.0
        self._next_init_at = 0.0
        self._known: dict[int, tuple[str, str]] = {}   # index -> (uuid, name), for lost GPUs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.enabled:
            health.declare(COLLECTOR)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="trimtab-gpu-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:   # never let the poll thread die
                log.exception("GPU poll failed unexpectedly")
                self._health.count_error(COLLECTOR, "unexpected")
            self._stop.wait(self.poll_s)

    # --- polling ----------------------------------------------------------------------------
    def _error_name(self, exc: BaseException) -> str:
        return type(exc).__name__.removeprefix("NVMLError_")

    def _ensure_init(self, now: float) -> bool:
        if self._initialised:
            return True
        if now < self._next_init_at:
            return False
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except (nvml.NVMLError_LibraryNotFound, nvml.NVMLError_DriverNotLoaded) as exc:
            self.enabled = False
            self.disabled_reason = f"no NVML: {exc}"
            self._health.forget(COLLECTOR)
            log.warning("GPU collector disabled: NVML unavailable (%s); "
                        "trimtab_gpu_collector_enabled is 0", exc)
            return False
        except nvml.NVMLError as exc:
            self._health.count_error(COLLECTOR, self._error_name(exc))
            self._schedule_reinit(now)
            return False
        self._initialised = True   # backoff is reset only by a poll that finds every GPU
        return True

    def _schedule_reinit(self, now: float) -> None:
        self._backoff_s = min(self._max_backoff_s, max(1.0, self._backoff_s * 2))
        self._next_init_at = now + self._backoff_s

    def poll_once(self) -> None:
        """Read every device once and replace the cache; errors are counted, never raised."""
        if not self.enabled:
            return
        start = self._clock()
        errors: list[str] = []
        if not self._ensure_init(start):
            if self.enabled:
                self._health.record(COLLECTOR, ok=False, duration_s=self._clock() - start,
                                    now_unix_s=self._wall())
                self._snapshot = GpuSnapshot(start, self._lost_readings())
            return
        nvml = self._nvml
        readings: list[GpuReading] = []
        lost = False
        driver = ""
        try:
            driver = nvml.nvmlSystemGetDriverVersion()
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            errors.append(self._error_name(exc))
            count = 0
            lost = isinstance(exc, nvml.NVMLError_GpuIsLost)
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                reading = self._read_device(str(index), handle, errors)
                self._known[index] = (reading.uuid, reading.name)
                readings.append(reading)
                readings.extend(self._read_mig(index, handle, errors))
            except nvml.NVMLError_GpuIsLost:
                errors.append("GpuIsLost")
                lost = True
                uuid, name = self._known.get(index, ("", ""))
                readings.append(GpuReading(str(index), uuid, name, up=False))
            except nvml.NVMLError as exc:
                errors.append(self._error_name(exc))
                uuid, name = self._known.get(index, ("", ""))
                readings.append(GpuReading(str(index), uuid, name, up=False))
        if lost:
            # A lost GPU needs NVML re-initialised; back off so a dead board is not hammered.
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                pass
            self._initialised = False
            self._schedule_reinit(self._clock())
        else:
            self._backoff_s = 0.0
        end = self._clock()
        self._snapshot = GpuSnapshot(end, readings, driver)
        self._health.record(COLLECTOR, ok=not errors, duration_s=end - start,
                            now_unix_s=self._wall(), errors=tuple(errors))

    def _lost_readings(self) -> list[GpuReading]:
        return [GpuReading(str(i), uuid, name, up=False) for i, (uuid, name) in self._known.items()]

    def _read_device(self, gpu: str, handle: Any, errors: list[str]) -> GpuReading:
        nvml = self._nvml
        reading = GpuReading(gpu, nvml.nvmlDeviceGetUUID(handle), nvml.nvmlDeviceGetName(handle),
                             up=True)

        unsupported = (nvml.NVMLError_NotSupported,
                       getattr(nvml, "NVMLError_FunctionNotFound", nvml.NVMLError_NotSupported))

        def attempt(fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except unsupported:                  # omit the series rather than export 0;
                return None                      # old drivers lack e.g. memory info v2
            except nvml.NVMLError_GpuIsLost:
                raise
            except nvml.NVMLError as exc:
                errors.append(self._error_name(exc))
                return None
            except (ValueError, TypeError, OverflowError):
                # A driver (or fake) handing back garbage loses that series, not the GPU.
                errors.append("BadValue")
                return None

        v = reading.values
        mem = attempt(lambda: nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2))
        if mem is None:
            mem = attempt(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        if mem is not None:
            v[names.GPU_MEMORY_USED] = float(mem.used)
            v[names.GPU_MEMORY_TOTAL] = float(mem.total)
            if getattr(mem, "reserved", None) is not None:
                v[names.GPU_MEMORY_RESERVED] = float(mem.reserved)
        util = attempt(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        if util is not None:
            v[names.GPU_UTILIZATION] = util.gpu / 100.0
            v[names.GPU_MEMORY_UTILIZATION] = util.memory / 100.0
        for metric, fn, scale in (
                (names.GPU_POWER, nvml.nvmlDeviceGetPowerUsage, 1e-3),
                (names.GPU_POWER_LIMIT, nvml.nvmlDeviceGetEnforcedPowerLimit, 1e-3)):
            value = attempt(lambda fn=fn: fn(handle))
            if value is not None:
                v[metric] = value * scale
        temp = attempt(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        if temp is not None:
            v[names.GPU_TEMPERATURE] = float(temp)
        energy = attempt(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        if energy is not None:
            reading.energy_joules = energy / 1000.0
        mask = attempt(lambda: nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))
        if mask is not None:
            reading.throttle = {r: int(bool(mask & bit)) for r, bit in _THROTTLE_REASONS.items()}
        procs = attempt(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle)) or []
        reading.processes = self._top_processes(procs, errors)
        for metric in [m for m, x in v.items() if not math.isfinite(x)]:
            del v[metric]                        # NaN/Inf: omit this series, keep the rest
            errors.append("NonFinite")
        if reading.energy_joules is not None and not math.isfinite(reading.energy_joules):
            reading.energy_joules = None
            errors.append("NonFinite")
        return reading

    def _top_processes(self, procs: list[Any], errors: list[str]) -> dict[str, float]:
        """Memory by process name (never pid: unbounded), the largest few only."""
        by_name: dict[str, float] = {}
        for p in procs:
            if p.usedGpuMemory is None:          # NVML could not attribute it (e.g. in a container)
                continue
            try:
                pname = self._nvml.nvmlSystemGetProcessName(p.pid)
            except self._nvml.NVMLError:
                pname = "unknown"
            if isinstance(pname, bytes):
                pname = pname.decode(errors="replace")
            pname = pname.rsplit("/", 1)[-1][:64] or "unknown"
            by_name[pname] = by_name.get(pname, 0.0) + float(p.usedGpuMemory)
        top = sorted(by_name.items(), key=lambda kv: -kv[1])[:MAX_PROCESSES_PER_GPU]
        return dict(top)

    def _read_mig(self, index: int, handle: Any, errors: list[str]) -> list[GpuReading]:
        nvml = self._nvml
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        except nvml.NVMLError:                  # NotSupported on pre-Ampere boards
            return []
        if current != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        out = []
        try:
            slots = nvml.nvmlDeviceGetMaxMigDeviceCount(handle)
        except nvml.NVMLError as exc:           # the parent GPU is fine: count, do not drop it
            errors.append(self._error_name(exc))
            return []
        for j in range(slots):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
                out.append(self._read_device(f"{index}/mig{j}", mig, errors))
            except nvml.NVMLError_NotFound:
                continue
            except nvml.NVMLError_GpuIsLost:
                raise
            except nvml.NVMLError as exc:
                errors.append(self._error_name(exc))
        return out

    # --- exposition -------------------------------------------------------------------------
    def snapshot(self) -> GpuSnapshot | None:
        return self._snapshot

    def _fresh(self, snap: GpuSnapshot) -> bool:
        # A hung NVML call stalls the poll thread, not the scrape: old readings are dropped.
        return self._clock() - snap.taken_at_s <= max(3 * self.poll_s, 5.0)

    def collect(self) -> Iterator:
        yield GaugeMetricFamily(names.GPU_COLLECTOR_ENABLED,
                                names.BY_NAME[names.GPU_COLLECTOR_ENABLED].help,
                                value=1.0 if self.enabled else 0.0)
        snap = self._snapshot
        if not self.enabled or snap is None:
            return
        if not self._fresh(snap):
            self._health.record(COLLECTOR, ok=False, duration_s=self._clock() - snap.taken_at_s,
                                now_unix_s=self._wall(), errors=("stale",))
            return
        lbl = ["gpu", "uuid"]
        info = InfoMetricFamily(names.GPU_INFO, names.BY_NAME[names.GPU_INFO].help,
                                labels=["gpu", "uuid", "name", "driver_version"])
        up = GaugeMetricFamily(names.GPU_UP, names.BY_NAME[names.GPU_UP].help, labels=lbl)
        gauges = {m: GaugeMetricFamily(m, names.BY_NAME[m].help, labels=lbl) for m in _GAUGES}
        energy = CounterMetricFamily(names.GPU_ENERGY, names.BY_NAME[names.GPU_ENERGY].help,
                                     labels=lbl)
        throttle = GaugeMetricFamily(names.GPU_THROTTLE, names.BY_NAME[names.GPU_THROTTLE].help,
                                     labels=lbl + ["reason"])
        procs = GaugeMetricFamily(names.GPU_PROCESS_MEMORY,
                                  names.BY_NAME[names.GPU_PROCESS_MEMORY].help,
                                  labels=lbl + ["process"])
        for r in snap.readings:
            key = [r.gpu, r.uuid]
            up.add_metric(key, 1.0 if r.up else 0.0)
            if not r.up:
                continue
            info.add_metric(key + [r.name, snap.driver_version], {})
            for metric, value in r.values.items():
                gauges[metric].add_metric(key, value)
            if r.energy_joules is not None:
                energy.add_metric(key, r.energy_joules)
            for reason, active in r.throttle.items():
                throttle.add_metric(key + [reason], active)
            for pname, used in r.processes.items():
                procs.add_metric(key + [pname], used)
        yield info
        yield up
        yield from gauges.values()
        yield energy
        yield throttle
        yield procs


def load_nvml(mode: str, fake_config_path: str | None = None) -> Any | None:
    """The NVML module for ``--gpu auto|off|fake``; None when off."""
    if mode == "off":
        return None
    if mode == "fake":
        from trimtab.collectors.fake_nvml import FakeNVML
        return FakeNVML(config_path=fake_config_path)
    import pynvml
    return pynvml
