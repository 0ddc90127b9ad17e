"""The GPU collector against the fake NVML: units, NotSupported, lost GPUs, no NVML, a hung NVML."""
from __future__ import annotations

import json
import logging
import os
import time

import pytest
from hypothesis import given, settings, strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from trimtab.collectors import names
from trimtab.collectors.fake_nvml import FakeGpuConfig, FakeNVML, FakeProcess
from trimtab.collectors.gpu import GpuCollector
from trimtab.collectors.health import CollectorHealth

GIB = 1024 ** 3


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def build(config: FakeGpuConfig | None = None, **fake_kw):
    """(collector, registry, fake, clock) with one poll done."""
    clock = Clock()
    fake = FakeNVML(config or FakeGpuConfig(), clock=clock, sleep=lambda s: None, **fake_kw)
    health = CollectorHealth()
    collector = GpuCollector(fake, health, poll_s=1.0, clock=clock, wall_clock=lambda: 1.7e9)
    registry = CollectorRegistry()
    registry.register(health)
    registry.register(collector)
    collector.poll_once()
    return collector, registry, fake, clock


def val(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def test_units_are_base_units():
    cfg = FakeGpuConfig(count=2, memory_total_bytes=80 * GIB, memory_used_ratio=0.5,
                        utilization_ratio=0.73, memory_utilization_ratio=0.2, power_watts=250.5,
                        power_limit_watts=400, temperature_celsius=61)
    _, reg, _, _ = build(cfg)
    uuid = "GPU-fake0000-0000-0000-0000-000000000001"
    lbl = {"gpu": "1", "uuid": uuid}
    assert val(reg, "trimtab_gpu_memory_used_bytes", **lbl) == 40 * GIB
    assert val(reg, "trimtab_gpu_memory_total_bytes", **lbl) == 80 * GIB
    assert val(reg, "trimtab_gpu_utilization_ratio", **lbl) == pytest.approx(0.73)
    assert val(reg, "trimtab_gpu_memory_utilization_ratio", **lbl) == pytest.approx(0.2)
    assert val(reg, "trimtab_gpu_power_watts", **lbl) == pytest.approx(250.5)   # from mW
    assert val(reg, "trimtab_gpu_power_limit_watts", **lbl) == 400
    assert val(reg, "trimtab_gpu_temperature_celsius", **lbl) == 61
    assert val(reg, "trimtab_gpu_up", **lbl) == 1
    assert val(reg, "trimtab_gpu_collector_enabled") == 1
    assert val(reg, "trimtab_collector_success", collector="gpu") == 1


def test_energy_is_a_counter_in_joules_that_grows_with_power():
    collector, reg, _, clock = build(FakeGpuConfig(power_watts=100))
    lbl = {"gpu": "0", "uuid": "GPU-fake0000-0000-0000-0000-000000000000"}
    first = val(reg, "trimtab_gpu_energy_joules_total", **lbl)
    clock.t += 10                      # 10 s at 100 W = 1000 J
    collector.poll_once()
    assert val(reg, "trimtab_gpu_energy_joules_total", **lbl) - first == pytest.approx(1000)


def test_mig_utilisation_not_supported_is_omitted_not_zero():
    _, reg, _, _ = build(FakeGpuConfig(count=1, mig={0: 2}, utilization_ratio=0.5))
    mig = {"gpu": "0/mig1", "uuid": "MIG-fake0000-0000-0000-0000-00000001"}
    assert val(reg, "trimtab_gpu_memory_total_bytes", **mig) == 40 * GIB
    assert val(reg, "trimtab_gpu_utilization_ratio", **mig) is None
    assert val(reg, "trimtab_gpu_utilization_ratio", gpu="0",
               uuid="GPU-fake0000-0000-0000-0000-000000000000") == 0.5
    # NotSupported is expected behaviour, not an error
    assert val(reg, "trimtab_collector_success", collector="gpu") == 1


def test_process_memory_bounded_by_name_and_none_skipped():
    procs = [FakeProcess(pid=10 + i, name=f"/usr/bin/worker{i % 3}", used_memory_bytes=GIB)
             for i in range(12)] + [FakeProcess(pid=99, name="ghost", used_memory_bytes=None)]
    _, reg, _, _ = build(FakeGpuConfig(processes={0: procs}))
    text = generate_latest(reg).decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("trimtab_gpu_process_memory")]
    assert len(lines) == 3                                  # 12 pids, 3 names, no pid label
    assert 'process="worker0"' in text and "ghost" not in text
    assert val(reg, "trimtab_gpu_process_memory_used_bytes", gpu="0",
               uuid="GPU-fake0000-0000-0000-0000-000000000000", process="worker0") == 4 * GIB


def test_lost_gpu_marked_down_then_reinitialised_with_backoff():
    collector, reg, fake, clock = build(FakeGpuConfig(count=2))
    lbl1 = {"gpu": "1", "uuid": "GPU-fake0000-0000-0000-0000-000000000001"}
    inits = fake.init_calls
    fake.set_config(FakeGpuConfig(count=2, lost=[1]))
    collector.poll_once()
    assert val(reg, "trimtab_gpu_up", **lbl1) == 0          # identity kept from before
    assert val(reg, "trimtab_gpu_memory_used_bytes", **lbl1) is None
    assert val(reg, "trimtab_collector_errors_total", collector="gpu", error="GpuIsLost") == 1
    assert val(reg, "trimtab_collector_success", collector="gpu") == 0
    clock.t += 0.5
    collector.poll_once()                                   # inside the 1 s backoff: no re-init
    assert fake.init_calls == inits
    fake.set_config(FakeGpuConfig(count=2))                 # the board comes back
    clock.t += 1.0
    collector.poll_once()
    assert fake.init_calls == inits + 1
    assert val(reg, "trimtab_gpu_up", **lbl1) == 1


def test_backoff_doubles_while_the_gpu_stays_lost():
    collector, _, fake, clock = build(FakeGpuConfig(lost=[0]))
    times = []
    for _ in range(40):
        before = fake.init_calls
        clock.t += 0.5
        collector.poll_once()
        if fake.init_calls > before:
            times.append(clock.t)
    gaps = [round(b - a, 1) for a, b in zip(times, times[1:])]
    assert gaps[:3] == [2.0, 4.0, 8.0]                      # 1 s, then doubling


def test_no_nvml_disables_with_one_log_line(caplog):
    caplog.set_level(logging.WARNING)
    collector, reg, _, _ = build(FakeGpuConfig(library_missing=True))
    collector.poll_once()
    collector.poll_once()
    assert val(reg, "trimtab_gpu_collector_enabled") == 0
    assert val(reg, "trimtab_collector_success", collector="gpu") is None
    lines = [r for r in caplog.records if "GPU collector disabled" in r.getMessage()]
    assert len(lines) == 1


def test_gpu_off_exports_enabled_zero_only():
    health = CollectorHealth()
    reg = CollectorRegistry()
    reg.register(GpuCollector(None, health))
    assert val(reg, "trimtab_gpu_collector_enabled") == 0
    assert "trimtab_gpu_up" not in generate_latest(reg).decode()


@pytest.mark.parametrize("error", ["Unknown", "Timeout", "NoPermission"], ids=str)
def test_other_errors_counted_by_type_and_series_omitted(error):
    _, reg, _, _ = build(FakeGpuConfig(fail={"nvmlDeviceGetPowerUsage": error}))
    lbl = {"gpu": "0", "uuid": "GPU-fake0000-0000-0000-0000-000000000000"}
    assert val(reg, "trimtab_gpu_power_watts", **lbl) is None
    assert val(reg, "trimtab_gpu_temperature_celsius", **lbl) == 35     # the rest still there
    assert val(reg, "trimtab_collector_errors_total", collector="gpu", error=error) == 1
    assert val(reg, "trimtab_collector_success", collector="gpu") == 0


def test_stale_cache_is_not_exported_as_fresh():
    collector, reg, _, clock = build()
    clock.t += 10                                           # poll thread stuck for 10 s
    assert val(reg, "trimtab_gpu_up", gpu="0",
               uuid="GPU-fake0000-0000-0000-0000-000000000000") is None
    assert val(reg, "trimtab_collector_success", collector="gpu") == 0


def test_a_hung_nvml_never_stalls_a_scrape():
    fake = FakeNVML(FakeGpuConfig(count=8))
    health = CollectorHealth()
    collector = GpuCollector(fake, health, poll_s=0.05)
    reg = CollectorRegistry()
    reg.register(collector)
    collector.start()
    try:
        deadline = time.monotonic() + 5
        while collector.snapshot() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        fake.set_config(FakeGpuConfig(count=8, delay_s=0.5))   # every NVML call now takes 0.5 s
        time.sleep(0.2)
        t0 = time.perf_counter()
        text = generate_latest(reg).decode()
        assert time.perf_counter() - t0 < 0.2
        assert "trimtab_gpu_up" in text
    finally:
        fake.set_config(FakeGpuConfig(count=8))
        collector.stop()


def test_fake_config_file_reread_on_change_and_bad_file_keeps_last(tmp_path):
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps({"count": 2, "memory_used_ratio": 0.25}))
    collector, reg, fake, _ = build(config_path=str(path))
    lbl = {"gpu": "0", "uuid": "GPU-fake0000-0000-0000-0000-000000000000"}
    assert val(reg, "trimtab_gpu_memory_used_bytes", **lbl) == 20 * GIB
    path.write_text("count: 2\nmemory_used_ratio: 0.99\n")          # YAML works too
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    collector.poll_once()
    assert val(reg, "trimtab_gpu_memory_used_bytes", **lbl) == pytest.approx(0.99 * 80 * GIB, rel=1e-9)
    path.write_text("count: -1\n")                                  # breaks a rule
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    collector.poll_once()
    assert fake.config_errors == 1
    assert val(reg, "trimtab_gpu_memory_used_bytes", **lbl) == pytest.approx(0.99 * 80 * GIB, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(count=st.integers(0, 8), used=st.floats(0, 1), util=st.floats(0, 1),
       power=st.floats(0, 1000), mig=st.integers(0, 3))
def test_every_exported_gpu_value_is_in_range(count, used, util, power, mig):
    cfg = FakeGpuConfig(count=count, memory_used_ratio=used, utilization_ratio=util,
                        power_watts=power, mig={0: mig} if mig else {})
    collector, reg, _, _ = build(cfg)
    snap = collector.snapshot()
    assert len([r for r in snap.readings if "/" not in r.gpu]) == count
    for r in snap.readings:
        v = r.values
        assert 0 <= v[names.GPU_MEMORY_USED] <= v[names.GPU_MEMORY_TOTAL]
        if names.GPU_UTILIZATION in v:
            assert 0 <= v[names.GPU_UTILIZATION] <= 1
        assert v[names.GPU_POWER] >= 0


def test_a_failing_mig_query_keeps_the_parent_gpu_up():
    _, reg, _, _ = build(FakeGpuConfig(mig={0: 2},
                                       fail={"nvmlDeviceGetMaxMigDeviceCount": "Unknown"}))
    assert val(reg, "trimtab_gpu_up", gpu="0", uuid="GPU-fake0000-0000-0000-0000-000000000000") == 1
    assert val(reg, "trimtab_collector_errors_total", collector="gpu", error="Unknown") == 1


def test_old_driver_without_memory_info_v2_falls_back_quietly():
    _, reg, _, _ = build(FakeGpuConfig(fail={"nvmlDeviceGetMemoryInfo_v2": "FunctionNotFound"}))
    lbl = {"gpu": "0", "uuid": "GPU-fake0000-0000-0000-0000-000000000000"}
    assert val(reg, "trimtab_gpu_memory_total_bytes", **lbl) == 80 * GIB
    assert val(reg, "trimtab_gpu_memory_reserved_bytes", **lbl) is None
    assert val(reg, "trimtab_collector_success", collector="gpu") == 1


@pytest.mark.parametrize("bad", [
    pytest.param(lambda h: int(float("nan")), id="raises-ValueError"),   # int(NaN) in a driver shim
    pytest.param(lambda h: float("nan"), id="returns-NaN"),
    pytest.param(lambda h: float("inf"), id="returns-Inf"),
])
def test_one_bad_reading_loses_only_its_series(bad):
    """Issue 18 (7): a NaN/Inf or garbage reading on one GPU must not drop every GPU's series."""
    collector, reg, fake, _ = build(FakeGpuConfig(count=2, power_watts=100.0))
    good_power = fake.nvmlDeviceGetPowerUsage
    fake.nvmlDeviceGetPowerUsage = lambda h: bad(h) if h.index == 0 else good_power(h)
    collector.poll_once()
    reg2 = CollectorRegistry()
    reg2.register(collector)
    uuid0 = "GPU-fake0000-0000-0000-0000-000000000000"
    uuid1 = "GPU-fake0000-0000-0000-0000-000000000001"
    assert val(reg2, "trimtab_gpu_up", gpu="0", uuid=uuid0) == 1
    assert val(reg2, "trimtab_gpu_up", gpu="1", uuid=uuid1) == 1
    assert val(reg2, "trimtab_gpu_power_watts", gpu="0", uuid=uuid0) is None
    assert val(reg2, "trimtab_gpu_power_watts", gpu="1", uuid=uuid1) == pytest.approx(100.0)
    assert val(reg2, "trimtab_gpu_temperature_celsius", gpu="0", uuid=uuid0) is not None


@pytest.mark.parametrize("field", ["temperature_celsius", "power_watts", "utilization_ratio"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_fake_config_rejects_non_finite_values(field, value):
    with pytest.raises(ValueError, match=field):
        FakeGpuConfig(**{field: value})


def test_fake_config_rejects_non_finite_per_gpu_override():
    with pytest.raises(ValueError, match="per_gpu"):
        FakeGpuConfig(per_gpu={0: {"temperature_celsius": float("nan")}})
