"""A fake NVML module (stand-in for pynvml on machines without a GPU), steerable from a config file.

It has the real module's function names, constants and error classes (the NVMLError
subclasses are pynvml's own, so ``except pynvml.NVMLError_GpuIsLost`` catches them), and the
real units: memory bytes, power mW, energy mJ, utilisation in percent. MIG devices raise
NotSupported for utilisation, as on real hardware; per-process ``usedGpuMemory`` may be None.
The config file (JSON or YAML) is re-read whenever its modification time changes, so a demo or
an alert test can push memory to 99 % or lose a GPU while the sidecar runs.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import pynvml
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trimtab.common.errors import message

log = logging.getLogger(__name__)

# Re-exported so the fake is a drop-in for the real module.
NVMLError = pynvml.NVMLError
NVMLError_LibraryNotFound = pynvml.NVMLError_LibraryNotFound
NVMLError_DriverNotLoaded = pynvml.NVMLError_DriverNotLoaded
NVMLError_GpuIsLost = pynvml.NVMLError_GpuIsLost
NVMLError_NotSupported = pynvml.NVMLError_NotSupported
NVMLError_NotFound = pynvml.NVMLError_NotFound
NVMLError_Uninitialized = pynvml.NVMLError_Uninitialized
NVMLError_Unknown = pynvml.NVMLError_Unknown
NVMLError_Timeout = pynvml.NVMLError_Timeout
NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
NVML_DEVICE_MIG_ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE
NVML_DEVICE_MIG_DISABLE = pynvml.NVML_DEVICE_MIG_DISABLE
nvmlMemory_v2 = pynvml.nvmlMemory_v2
nvmlClocksThrottleReasonGpuIdle = pynvml.nvmlClocksThrottleReasonGpuIdle
nvmlClocksThrottleReasonSwPowerCap = pynvml.nvmlClocksThrottleReasonSwPowerCap
nvmlClocksThrottleReasonHwSlowdown = pynvml.nvmlClocksThrottleReasonHwSlowdown
nvmlClocksThrottleReasonSwThermalSlowdown = pynvml.nvmlClocksThrottleReasonSwThermalSlowdown
nvmlClocksThrottleReasonHwThermalSlowdown = pynvml.nvmlClocksThrottleReasonHwThermalSlowdown

_GIB = 1024 ** 3


class FakeProcess(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pid: int
    name: str = "python3"
    used_memory_bytes: int | None = None      # None: NVML could not attribute it


class FakeGpuConfig(BaseModel):
    """What the fake GPUs report; every field has a default, so ``{}`` is one idle A100."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    count: int = Field(1, ge=0, le=64)
    name: str = "NVIDIA A100-SXM4-80GB (fake)"
    driver_version: str = "550.54.15"
    memory_total_bytes: int = Field(80 * _GIB, ge=1)
    memory_used_ratio: float = Field(0.10, ge=0, le=1)
    memory_reserved_bytes: int = Field(512 * 1024 ** 2, ge=0)
    utilization_ratio: float = Field(0.0, ge=0, le=1)
    memory_utilization_ratio: float = Field(0.0, ge=0, le=1)
    power_watts: float = Field(60.0, ge=0)
    power_limit_watts: float = Field(400.0, gt=0)
    temperature_celsius: float = Field(35.0)
    throttle_reasons: int = Field(0, ge=0)     # NVML bitmask
    lost: list[int] = []                       # GPU indices that raise GpuIsLost
    mig: dict[int, int] = {}                   # GPU index -> number of MIG devices
    processes: dict[int, list[FakeProcess]] = {}
    default_process: str | None = "tritonserver"  # GPUs without a processes entry: one process
                                                  # of this name holding all used memory
    fail: dict[str, str] = {}                  # NVML function -> error class suffix, all GPUs
    delay_s: float = Field(0.0, ge=0)          # every device call sleeps this long (a hung NVML)
    library_missing: bool = False              # nvmlInit raises LibraryNotFound
    per_gpu: dict[int, dict[str, float]] = {}  # index -> overrides of the ratios/power/temperature


@dataclass(frozen=True)
class FakeHandle:
    index: int
    mig: int | None = None


def load_fake_gpu_config(path: str) -> FakeGpuConfig:
    """Parse a JSON or YAML fake-GPU file; errors name the file and the field."""
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return FakeGpuConfig(**raw)
    except ValidationError as exc:
        raise ValueError(message(exc, path, first_only=True)) from None


class FakeNVML:
    """Module-like object with pynvml's API; one instance per sidecar (or per test)."""

    def __init__(self, config: FakeGpuConfig | None = None, *, config_path: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._config = config or FakeGpuConfig()
        self._path = config_path
        self._stamp: tuple[int, int, int] | None = None
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._initialised = False
        self._energy_mj: dict[int, float] = {}
        self._energy_at: dict[int, float] = {}
        self.init_calls = 0
        self.config_errors = 0
        self._reload()

    # --- steering -------------------------------------------------------------------------
    @property
    def config(self) -> FakeGpuConfig:
        return self._config

    def set_config(self, config: FakeGpuConfig) -> None:
        with self._lock:
            self._config = config

    def _reload(self) -> None:
        """Re-read the config file if it changed; a bad file keeps the last good config."""
        if self._path is None:
            return
        try:
            st = os.stat(self._path)
        except OSError:
            return
        # Inode and size too: a write-then-rename within one mtime tick is still seen.
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            cfg = load_fake_gpu_config(self._path)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            self.config_errors += 1
            log.error("fake GPU config not applied, keeping the previous one: %s", exc)
            return
        with self._lock:
            self._config = cfg

    # --- helpers ----------------------------------------------------------------------------
    def _check(self, fn: str, handle: FakeHandle | None = None) -> FakeGpuConfig:
        if not self._initialised:
            raise NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        cfg = self._config
        if cfg.delay_s:
            self._sleep(cfg.delay_s)
        if handle is not None and handle.index in cfg.lost:
            raise NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if fn in cfg.fail:
            raise _error_by_suffix(cfg.fail[fn])
        return cfg

    def _value(self, cfg: FakeGpuConfig, handle: FakeHandle, key: str) -> float:
        return float(cfg.per_gpu.get(handle.index, {}).get(key, getattr(cfg, key)))

    # --- init -------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self._reload()
        self.init_calls += 1
        if self._config.library_missing:
            raise NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        self._initialised = True

    def nvmlShutdown(self) -> None:
        self._initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return self._check("nvmlSystemGetDriverVersion").driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._reload()
        return self._check("nvmlDeviceGetCount").count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        cfg = self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < cfg.count:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        handle = FakeHandle(index)
        self._check("nvmlDeviceGetHandleByIndex", handle)
        return handle

    # --- identity ---------------------------------------------------------------------------
    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        self._check("nvmlDeviceGetUUID", handle)
        if handle.mig is not None:
            return f"MIG-fake0000-0000-0000-{handle.index:04d}-{handle.mig:08d}"
        return f"GPU-fake0000-0000-0000-0000-{handle.index:012d}"

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        return self._check("nvmlDeviceGetName", handle).name

    # --- readings ---------------------------------------------------------------------------
    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle, version: int | None = None):
        # "nvmlDeviceGetMemoryInfo_v2" in ``fail`` breaks only the versioned call (old drivers).
        cfg = self._check("nvmlDeviceGetMemoryInfo" + ("_v2" if version else ""), handle)
        total = cfg.memory_total_bytes
        if handle.mig is not None:
            total //= max(1, cfg.mig.get(handle.index, 1))
        used = int(total * self._value(cfg, handle, "memory_used_ratio"))
        reserved = min(cfg.memory_reserved_bytes, total - used)
        if version == nvmlMemory_v2:
            return SimpleNamespace(version=version, total=total, reserved=reserved,
                                   free=total - used - reserved, used=used)
        return SimpleNamespace(total=total, free=total - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle):
        cfg = self._check("nvmlDeviceGetUtilizationRates", handle)
        if handle.mig is not None:
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=round(100 * self._value(cfg, handle, "utilization_ratio")),
                               memory=round(100 * self._value(cfg, handle, "memory_utilization_ratio")))

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        cfg = self._check("nvmlDeviceGetPowerUsage", handle)
        return int(self._value(cfg, handle, "power_watts") * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeHandle) -> int:
        cfg = self._check("nvmlDeviceGetEnforcedPowerLimit", handle)
        return int(cfg.power_limit_watts * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> int:
        cfg = self._check("nvmlDeviceGetTotalEnergyConsumption", handle)
        # Energy integrates power over time since the first reading, like the driver counter.
        now = self._clock()
        with self._lock:
            last = self._energy_at.get(handle.index, now)
            self._energy_mj[handle.index] = self._energy_mj.get(handle.index, 1.0e6) + (
                self._value(cfg, handle, "power_watts") * 1000 * max(0.0, now - last))
            self._energy_at[handle.index] = now
            return int(self._energy_mj[handle.index])

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        cfg = self._check("nvmlDeviceGetTemperature", handle)
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(self._value(cfg, handle, "temperature_celsius"))

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: FakeHandle) -> int:
        return self._check("nvmlDeviceGetCurrentClocksThrottleReasons", handle).throttle_reasons

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list:
        cfg = self._check("nvmlDeviceGetComputeRunningProcesses", handle)
        procs = cfg.processes.get(handle.index)
        if procs is None and cfg.default_process and handle.mig is None:
            used = int(cfg.memory_total_bytes * self._value(cfg, handle, "memory_used_ratio"))
            procs = [FakeProcess(pid=1000 + handle.index, name=cfg.default_process,
                                 used_memory_bytes=used)]
        return [SimpleNamespace(pid=p.pid, usedGpuMemory=p.used_memory_bytes,
                                gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
                for p in procs or []]

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        cfg = self._check("nvmlSystemGetProcessName")
        for procs in cfg.processes.values():
            for p in procs:
                if p.pid == pid:
                    return p.name
        if cfg.default_process and 1000 <= pid < 1000 + cfg.count:
            return cfg.default_process
        raise NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    # --- MIG --------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, handle: FakeHandle) -> list[int]:
        cfg = self._check("nvmlDeviceGetMigMode", handle)
        mode = NVML_DEVICE_MIG_ENABLE if cfg.mig.get(handle.index) else NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeHandle) -> int:
        self._check("nvmlDeviceGetMaxMigDeviceCount", handle)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeHandle, index: int) -> FakeHandle:
        cfg = self._check("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        if index >= cfg.mig.get(handle.index, 0):
            raise NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return FakeHandle(handle.index, index)


def _error_by_suffix(suffix: str) -> pynvml.NVMLError:
    """An NVMLError subclass instance from its class-name suffix ("GpuIsLost", "Unknown")."""
    cls = getattr(pynvml, "NVMLError_" + suffix, None)
    if cls is None:
        return NVMLError(pynvml.NVML_ERROR_UNKNOWN)
    for value, mapped in NVMLError._valClassMapping.items():
        if mapped is cls:
            return NVMLError(value)
    return NVMLError(pynvml.NVML_ERROR_UNKNOWN)


# The fake is used as a module: the error classes and constants are its attributes too
# (every NVMLError subclass pynvml defines, not only the ones named above).
for _name in [n for n in list(globals()) if n.startswith(("NVML", "nvmlMemory", "nvmlClocks"))]:
    setattr(FakeNVML, _name, globals()[_name])
for _name in dir(pynvml):
    if _name.startswith("NVMLError_"):
        setattr(FakeNVML, _name, getattr(pynvml, _name))
