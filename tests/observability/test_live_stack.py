"""A real Prometheus scraping a running sidecar (proxy under load, fake NVML) and a real Alertmanager.

Every dashboard panel query runs through Prometheus' HTTP API; a GPU pushed to 99 % memory
through the fake NVML config must page nobody and open a ticket, with the right labels.
"""
from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from trimtab.alerts import promql as q
from trimtab.alerts.alertmanager import alertmanager_config
from trimtab.alerts.config import DEFAULT_CONFIG
from trimtab.alerts.rulefile import dump_yaml, rule_file
from trimtab.dashboards import build as dash_build
from trimtab.dashboards.boards import ALL_BOARDS
from tests.conftest import free_port
from tests.observability.support import (TRIMTAB, Proc, Webhook, python, raw_names,
                                         recorded_exprs, start_alertmanager, start_prometheus,
                                         wait_http)

pytestmark = pytest.mark.slow

NAMESPACE, POD, MODEL = "obs", "sidecar-0", "m1"
LOAD_REQUESTS = 600          # bounded load: count and time
LOAD_DEADLINE_S = 30.0
VARIABLES = {"$namespace": NAMESPACE, "$model": MODEL, "$__rate_interval": "5s",
             "$__range": "1m", "$__interval": "2s"}

# Stand-in model server (loopback aiohttp): 5-50 ms per request, /slow over the SLO, /fail 500.
UPSTREAM = '''
import asyncio, random, sys
from aiohttp import web
async def handle(request):
    await request.read()
    if request.path.endswith("/slow"):
        await asyncio.sleep(0.6)         # over the 0.5 s SLO
    else:
        await asyncio.sleep(random.uniform(0.005, 0.05))
    if request.path.endswith("/fail"):
        return web.json_response({"error": "boom"}, status=500)
    return web.json_response({"outputs": [1.0]})
app = web.Application()
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
'''


def substitute(expr: str) -> str:
    """Grafana's variables as a dashboard user would have them for this stack."""
    for var, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


class Stack:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[Proc] = []
        self.webhook = Webhook()
        self.gpu_config = work / "fake-gpu.json"
        self.set_gpu(memory_used_ratio=0.4)

    def start(self, name: str, args: list[str], log_path: Path) -> Proc:
        p = Proc(name, args, log_path)
        self.procs.append(p)
        return p

    def set_gpu(self, **fields: Any) -> None:
        base = {"count": 2, "utilization_ratio": 0.6, "power_watts": 250.0,
                "temperature_celsius": 61.0, "memory_used_ratio": 0.4}
        tmp = self.gpu_config.with_suffix(".tmp")
        tmp.write_text(json.dumps({**base, **fields}))
        tmp.replace(self.gpu_config)      # atomic: the sidecar never reads half a file

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.webhook.close()


def _load(proxy_url: str, count: int, deadline_s: float, path: str | None = None
          ) -> dict[str, int]:
    """Send ``count`` requests from 4 threads (one more than the concurrency limit, so some
    queue): mostly fast, some slow, some failing."""
    codes: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s

    def worker(offset: int) -> None:
        for i in range(offset, count, 4):
            if time.monotonic() > stop_at:
                return
            # ~2 % slow and ~1.3 % failing: the SLO burns (tickets) but pages nobody, so no
            # critical alert inhibits the warnings this module checks
            suffix = path if path is not None else (
                "/slow" if i % 50 == 0 else "/fail" if i % 75 == 1 else "")
            req = urllib.request.Request(f"{proxy_url}/v2/models/{MODEL}/infer{suffix}",
                                         data=b'{"inputs": []}', method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    code = str(resp.status)
            except urllib.error.HTTPError as exc:
                code = str(exc.code)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                code = "conn"
            with lock:
                codes[code] = codes.get(code, 0) + 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("live")
    s = Stack(work)
    try:
        up_port, proxy_port, admin_port = free_port(), free_port(), free_port()
        (work / "upstream.py").write_text(UPSTREAM)
        upstream = s.start("upstream", [python(), str(work / "upstream.py"), str(up_port)],
                           work / "upstream.log")
        sidecar = s.start("sidecar", [
            *TRIMTAB, "sidecar", "--proxy", "--gpu", "fake",
            "--fake-gpu-config", str(s.gpu_config), "--gpu-poll-s", "0.2",
            "--upstream", f"http://127.0.0.1:{up_port}",
            "--listen", f"127.0.0.1:{proxy_port}", "--metrics-port", str(admin_port),
            "--model", MODEL, "--slo-latency-s", "0.5", "--concurrency-limit", "3",
            "--max-queue-length", "8", "--queue-timeout-s", "5"], work / "sidecar.log")
        wait_http(f"http://127.0.0.1:{admin_port}/metrics", sidecar)
        assert upstream.popen.poll() is None, upstream.log_tail()
        am_url = start_alertmanager(s.start, work, alertmanager_config(
            DEFAULT_CONFIG, pager_url=s.webhook.url + "/pager",
            ticket_url=s.webhook.url + "/tickets",
            group_wait="1s", group_interval="1s", repeat_interval="1h"))
        # Test-only copy of the shipped rules: same expressions, 1 s interval and for:.
        (work / "rules.yaml").write_text(dump_yaml(rule_file(DEFAULT_CONFIG, for_override="1s",
                                                             interval="1s")))
        s.am_url = am_url
        ctrl_port = free_port()
        s.prom = start_prometheus(s.start, work, {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(work / "rules.yaml")],
            "alerting": {"alertmanagers": [{"static_configs": [
                {"targets": [am_url.removeprefix("http://")]}]}]},
            "scrape_configs": [{
                "job_name": "trimtab-sidecar", "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{admin_port}"],
                                    "labels": {"namespace": NAMESPACE, "pod": POD,
                                               "model": MODEL}}]},
                # honor_labels: the controller's own namespace/model labels name its target
                {"job_name": "trimtab-controller", "honor_labels": True,
                 "static_configs": [{"targets": [f"127.0.0.1:{ctrl_port}"],
                                     "labels": {"pod": "trimtab-controller-0"}}]}]})
        (work / "controller.yaml").write_text(json.dumps({
            "interval_s": 1, "source": "prometheus", "metrics_port": ctrl_port,
            "prometheus": {"url": s.prom.base, "window_s": 10, "staleness_s": 10},
            "targets": [{"workload": {"namespace": NAMESPACE, "name": MODEL}, "model": MODEL,
                         "matchers": {"namespace": NAMESPACE, "model": MODEL},
                         "policy": "hpa", "replicas": {"min": 1, "max": 4}}]}))
        controller = s.start("controller", [*TRIMTAB, "controller", "--config",
                                            str(work / "controller.yaml"), "--dry-run"],
                             work / "controller.log")
        wait_http(f"http://127.0.0.1:{ctrl_port}/metrics", controller)
        s.controller_url = f"http://127.0.0.1:{ctrl_port}"
        s.admin_url = f"http://127.0.0.1:{admin_port}"
        s.proxy_url = f"http://127.0.0.1:{proxy_port}"
        s.codes = _load(s.proxy_url, LOAD_REQUESTS, LOAD_DEADLINE_S)
        # Let a few scrapes and rule evaluations see the load.
        s.prom.wait_for(f'{q.REQUESTS_RATE}{{model="{MODEL}"}} > 0', 20, "recorded rate")
        yield s
    finally:
        s.close()


def test_load_went_through_the_proxy(stack: Stack) -> None:
    ok = stack.codes.get("200", 0)
    assert ok >= LOAD_REQUESTS // 2, stack.codes
    assert stack.codes.get("500", 0) > 0          # failures reached the metrics too


def _exported_series_names(stack: Stack) -> set[str]:
    """Series names on the sidecar's and the controller's /metrics pages right now."""
    names = set()
    for url in (stack.admin_url, stack.controller_url):
        with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
            page = resp.read().decode()
        names |= {line.split("{")[0].split(" ")[0] for line in page.splitlines()
                  if line and not line.startswith("#")}
    return names


def test_every_panel_query_parses_and_returns_data_where_its_series_exist(stack: Stack) -> None:
    records = recorded_exprs()
    exported = _exported_series_names(stack)
    checked_with_data, parse_only = [], []
    for board in ALL_BOARDS:
        for title, expr in dash_build.panel_queries(dash_build.board_dict(board)):
            result = stack.prom.query(substitute(expr))
            assert result["status"] == "success", f"{board}/{title}: {result}\n{expr}"
            if raw_names(expr, records) <= exported:
                assert result["data"]["result"], f"{board}/{title} returned no data:\n{expr}"
                checked_with_data.append((board, title))
            else:
                parse_only.append((board, title))
    # The sidecar and the dry-run controller feed nearly every panel. The rest read families
    # exported only on events (errors, holds) or by model-server adapters (batch size, an LLM
    # engine's series); test_replay_backfill.py checks the batch panels against a simulated
    # run, test_llm_board.py the LLM board's against sidecar adapters fed engine pages.
    assert {b for b, _ in checked_with_data} == set(ALL_BOARDS)
    not_llm = [p for p in parse_only if p[0] != "llm"]
    assert len(not_llm) <= 8, not_llm
    print("panels with data:", len(checked_with_data), "parse only:", parse_only)


def test_dashboard_variables_find_the_namespace_and_model(stack: Stack) -> None:
    board = dash_build.board_dict("model-detail")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    for name, want in (("namespace", NAMESPACE), ("model", MODEL)):
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", variables[name]["query"])
        assert m, variables[name]["query"]
        series = substitute(m.group(1))
        values = stack.prom.get(f"/api/v1/label/{m.group(2)}/values", **{"match[]": series})
        assert want in values["data"], values


def test_gpu_memory_at_99_percent_opens_a_ticket_with_the_right_labels(stack: Stack) -> None:
    alert = "TrimtabGPUMemoryNearFull"
    firing = stack.prom.query(f'ALERTS{{alertname="{alert}"}}')
    assert firing["status"] == "success" and firing["data"]["result"] == []
    started = time.monotonic()
    stack.set_gpu(memory_used_ratio=0.99)
    deadline = started + 45
    while time.monotonic() < deadline and not stack.webhook.alerts("/tickets", alert):
        time.sleep(0.25)
    got = stack.webhook.alerts("/tickets", alert)
    assert got, (f"{alert} never reached the tickets receiver; posts: {stack.webhook.posts}\n"
                 f"{stack.prom.query('ALERTS')}")
    labels = got[0]["labels"]
    assert labels["severity"] == "warning"
    assert labels["namespace"] == NAMESPACE and labels["pod"] == POD
    assert labels["model"] == MODEL and labels["gpu"] in ("0", "1")
    assert labels["uuid"].startswith("GPU-")
    assert got[0]["annotations"]["runbook_url"].endswith("#trimtabgpumemorynearfull")
    assert {a["labels"]["gpu"] for a in got} <= {"0", "1"}
    assert stack.webhook.alerts("/pager", alert) == []     # a warning pages nobody


def _am_alerts(stack: Stack, alertname: str) -> list[dict[str, Any]]:
    """Active alerts Alertmanager holds under that name (its v2 API)."""
    query = urllib.parse.urlencode({"filter": f'alertname="{alertname}"'})
    with urllib.request.urlopen(f"{stack.am_url}/api/v2/alerts?{query}", timeout=5) as resp:
        return json.load(resp)


def test_a_critical_alert_pages_and_inhibits_the_warning_for_the_same_model(
        stack: Stack) -> None:
    """Failures push the fast burn over 14.4x: the page goes to the pager receiver, and the
    GPU memory warning of the same namespace/model (GPU at 99 %) is inhibited."""
    stack.set_gpu(memory_used_ratio=0.99)
    deadline = time.monotonic() + 45
    while not _am_alerts(stack, "TrimtabGPUMemoryNearFull"):
        assert time.monotonic() < deadline, "the GPU memory warning never reached Alertmanager"
        time.sleep(0.25)
    codes = _load(stack.proxy_url, 400, LOAD_DEADLINE_S, path="/fail")
    assert codes.get("500", 0) >= 300, codes
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and not stack.webhook.alerts("/pager",
                                                                   "TrimtabErrorBudgetBurn"):
        time.sleep(0.25)
    paged = stack.webhook.alerts("/pager", "TrimtabErrorBudgetBurn")
    assert paged, f"no page: {stack.prom.query('ALERTS')}"
    assert {a["labels"]["long_window"] for a in paged} <= {"1h", "6h"}
    assert paged[0]["labels"]["namespace"] == NAMESPACE and paged[0]["labels"]["model"] == MODEL
    deadline = time.monotonic() + 15
    while True:
        warnings = _am_alerts(stack, "TrimtabGPUMemoryNearFull")
        if warnings and all(a["status"]["inhibitedBy"] for a in warnings):
            break
        assert time.monotonic() < deadline, f"warning not inhibited: {warnings}"
        time.sleep(0.25)
    assert all(a["status"]["state"] == "suppressed" for a in warnings)


def test_a_lost_gpu_pages(stack: Stack) -> None:
    stack.set_gpu(memory_used_ratio=0.5, lost=[1])
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and not stack.webhook.alerts("/pager", "TrimtabGPULost"):
        time.sleep(0.25)
    paged = stack.webhook.alerts("/pager", "TrimtabGPULost")
    assert paged, f"TrimtabGPULost never paged: {stack.prom.query('ALERTS')}"
    # The sidecar re-initialises NVML after a loss, so every GPU reads as down meanwhile.
    assert "1" in {a["labels"]["gpu"] for a in paged}
    assert all(a["labels"]["severity"] == "critical" for a in paged)
    assert stack.webhook.alerts("/tickets", "TrimtabGPULost") == []
