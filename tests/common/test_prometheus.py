"""prometheus: a real Prometheus on loopback, and the PromQL client on it (no series vs failed)."""
from __future__ import annotations

import subprocess
import time

import pytest

from trimtab.common.ports import free_port
from trimtab.common.process import stop_all, stop_process, wait_http_ok
from trimtab.common.prometheus import (BinaryMissing, PromClient, PrometheusServer, QueryFailed,
                                       find_binary, range_params, require_binary)

# No skip: `make test` installs the Debian package prometheus, so its absence is a failure.


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    server = PrometheusServer(tmp_path_factory.mktemp("prom"), {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "self", "static_configs": [
            {"targets": ["PLACEHOLDER"]}]}]})
    server.port = free_port()
    server.config["scrape_configs"][0]["static_configs"][0]["targets"] = [
        f"127.0.0.1:{server.port}"]                    # it scrapes itself: `up` gets a series
    with server:
        yield server


def test_server_is_ready_and_stops(prom):
    client = prom.client()
    deadline = time.monotonic() + 20
    while not client.instant('up{job="self"}') and time.monotonic() < deadline:
        time.sleep(0.3)
    result = client.instant('up{job="self"}')
    assert len(result) == 1 and result[0]["value"][1] == "1"


@pytest.mark.parametrize("promql, outcome", [
    ("vector(3)", [3.0]),
    ('up{job="nothing-is-called-this"}', []),          # no series: an empty answer, no error
    ("sum(", QueryFailed),                              # bad PromQL: Prometheus says why
    ("rate(up[1s]", QueryFailed),
], ids=["value", "no-series", "parse-error", "unclosed"])
def test_instant_query_tells_no_series_from_failure(prom, promql, outcome):
    client = prom.client()
    if outcome is QueryFailed:
        with pytest.raises(QueryFailed) as info:
            client.instant(promql)
        assert "query failed (bad_data)" in str(info.value) and promql in str(info.value)
    else:
        assert [float(r["value"][1]) for r in client.instant(promql)] == outcome


def test_range_query_has_a_point_per_step(prom):
    now_s = time.time()
    result = prom.client().range("vector(1)", now_s - 10, now_s, 2.0)
    assert len(result) == 1 and len(result[0]["values"]) == 6


def test_raw_body_of_other_paths_and_of_errors(prom):
    client = prom.client()
    assert client.body("/api/v1/status/buildinfo", {})["status"] == "success"
    bad = client.body("/api/v1/query", {"query": "sum("})
    assert bad["status"] == "error" and bad["errorType"] == "bad_data"


def test_unreachable_is_an_oserror_not_a_failed_query():
    with pytest.raises(OSError):
        PromClient(f"http://127.0.0.1:{free_port()}", timeout_s=2).instant("vector(1)")


@pytest.mark.parametrize("args, fragment", [
    (("q", 10.0, 20.0, 0.0), "step_s = 0.0: must be > 0"),
    (("q", 20.0, 10.0, 1.0), "end_unix_s = 10.0 is before start_unix_s = 20.0"),
], ids=["zero-step", "backwards"])
def test_bad_range_is_a_clear_error(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        range_params(*args)


def test_a_bad_config_fails_start_with_the_log(tmp_path):
    server = PrometheusServer(tmp_path, "global: [not, a, mapping\n")
    with pytest.raises(RuntimeError, match="prometheus exited") as info:
        server.start(timeout_s=30)
    assert "prometheus.yml" in str(info.value) or "yaml" in str(info.value).lower()
    assert server.proc is None


def test_missing_binary_names_the_package():
    assert find_binary("no-such-binary-trimtab") is None
    with pytest.raises(BinaryMissing, match="install the Debian package 'prometheus'"):
        require_binary("no-such-binary-trimtab")


def stubborn_child() -> subprocess.Popen:
    """A child that ignores SIGTERM, returned once it does (it says so on stdout)."""
    proc = subprocess.Popen(["python3", "-c", "import signal, time; "
                             "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', "
                             "flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_stop_process_kills_what_ignores_sigterm():
    proc = stubborn_child()
    t0 = time.monotonic()
    stop_process(proc, grace_s=0.5)
    assert proc.returncode == -9 and time.monotonic() - t0 < 10     # SIGKILL after the grace


def test_stop_all_terminates_together_and_kills_the_stubborn():
    polite = [subprocess.Popen(["python3", "-c", "import time; time.sleep(60)"]) for _ in range(3)]
    stubborn = stubborn_child()
    t0 = time.monotonic()
    stop_all([*polite, stubborn], grace_s=1.0)
    assert all(p.poll() is not None for p in [*polite, stubborn])
    assert stubborn.returncode == -9 and time.monotonic() - t0 < 8   # ~1 s grace, not 4


def test_wait_http_ok_reports_an_early_exit():
    proc = subprocess.Popen(["python3", "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match=r"exited \(3\)"):
        wait_http_ok(f"http://127.0.0.1:{free_port()}/", proc, timeout_s=10)
