"""The GPU collector against the real NVML (nvidia-ml-py); skipped where no driver is present."""
from __future__ import annotations

import pynvml
import pytest
from prometheus_client import CollectorRegistry

from trimtab.collectors.gpu import GpuCollector
from trimtab.collectors.health import CollectorHealth


@pytest.fixture
def real_nvml():
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded) as exc:
        pytest.skip(f"no NVIDIA driver here: {exc}")
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


@pytest.mark.gpu
def test_real_gpus_are_read_in_base_units(real_nvml):
    count = real_nvml.nvmlDeviceGetCount()
    health = CollectorHealth()
    collector = GpuCollector(real_nvml, health, poll_s=1.0)
    reg = CollectorRegistry()
    reg.register(health)
    reg.register(collector)
    collector.poll_once()
    snap = collector.snapshot()
    whole = [r for r in snap.readings if "/" not in r.gpu]
    assert len(whole) == count >= 1
    for r in whole:
        assert r.up and r.uuid.startswith("GPU-")
        mem = real_nvml.nvmlDeviceGetMemoryInfo(real_nvml.nvmlDeviceGetHandleByIndex(int(r.gpu)))
        assert r.values["trimtab_gpu_memory_total_bytes"] == mem.total      # bytes, not MiB
        if "trimtab_gpu_power_watts" in r.values:
            assert 1 <= r.values["trimtab_gpu_power_watts"] <= 2000        # watts, not mW
        if "trimtab_gpu_utilization_ratio" in r.values:
            assert 0 <= r.values["trimtab_gpu_utilization_ratio"] <= 1
    assert reg.get_sample_value("trimtab_gpu_collector_enabled") == 1
    print({r.gpu: r.values for r in snap.readings}, health.errors("gpu"))


def test_auto_without_a_driver_disables_the_collector():
    """On a machine without NVIDIA's library, --gpu auto turns the collector off, visibly."""
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded):
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("a driver is present: covered by the gpu-marked test")
    from trimtab.collectors.gpu import load_nvml
    health = CollectorHealth()
    collector = GpuCollector(load_nvml("auto"), health)
    collector.poll_once()
    reg = CollectorRegistry()
    reg.register(collector)
    assert reg.get_sample_value("trimtab_gpu_collector_enabled") == 0
    assert "no NVML" in collector.disabled_reason
