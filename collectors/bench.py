"""`trimtab sidecar bench`: the proxy's added latency against nginx, max req/s, exposition, idle CPU.

The load comes from ``wrk`` (C, one thread), so the generator costs a few microseconds per
request and is never what saturates; the Python generator this replaced was late by up to
19 ms at its p99 on a loaded machine and sent bursts that the proxy, not nginx, paid for.
Latency: 50 connections, each waiting an exponential think time (mean 100 ms) before its
next request, so arrivals at 500 req/s are close to Poisson while every latency is under a
millisecond or so; nothing is pinned, as in a pod. Two nginx processes: the upstream (a
canned answer) and the reference reverse proxy, so both proxies make the same two hops.
Throughput: the sidecar pinned to the idlest core, wrk and the upstream on the others.

On a machine shared with other tenants the added p99 follows how long the proxy waits for a
CPU, not its own work: each phase reports the proxy's run-queue wait (``/proc/PID/schedstat``)
beside its latency, and nginx, measured the same way in the same rounds, is the reference.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trimtab.common.ports import free_port
from trimtab.common.process import stop_all

console = Console(stderr=True)
RATE_PER_S = 500.0
LATENCY_CONNS = 50          # each at RATE_PER_S / LATENCY_CONNS req/s
SATURATION_CONNS = 64
# Latency rounds of 1 s (500 requests) per target, interleaved; the reported p99 is the median
# of the rounds' p99. On a shared machine a stall of tens of ms from another tenant lands in a
# round every few seconds: short rounds keep most of them clean, the median drops the rest,
# and every round's figure is in the JSON beside it.
ROUNDS = 15
MODELS = tuple(f"m{i}" for i in range(1, 11))
RESULT_MARK = "TRIMTAB-WRK "

NGINX_HTTP = """
worker_processes 1;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/{name}-body; proxy_temp_path {tmp}/{name}-proxy;
  fastcgi_temp_path {tmp}/{name}-fcgi; uwsgi_temp_path {tmp}/{name}-uwsgi;
  scgi_temp_path {tmp}/{name}-scgi;
  {servers}
}}
"""
UPSTREAM_SERVER = """server {{  # the fast upstream: a canned inference answer
    listen 127.0.0.1:{upstream};
    location / {{ default_type application/json; return 200 '{{"outputs":[]}}'; }}
  }}"""
REFERENCE_SERVER = """upstream model_server {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{  # the reference: nginx as a plain reverse proxy
    listen 127.0.0.1:{proxy};
    location / {{ proxy_pass http://model_server; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }}
  }}"""

# wrk's Lua hooks: the request, an optional exponential think time per connection (delay()
# is in ms), and one JSON line of figures at the end (latencies in µs, wrk's own histogram).
WRK_SCRIPT = """
local think_ms = tonumber(os.getenv("TRIMTAB_THINK_MS") or "0")
math.randomseed(tonumber(os.getenv("TRIMTAB_SEED") or "1"))
wrk.method = "POST"
wrk.path = "/v2/models/m1/infer"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
if think_ms > 0 then
  function delay() return -math.log(1 - math.random()) * think_ms end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('%s{"n":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d}\\n',
    "TRIMTAB-WRK ", summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def _wait_port(port: int, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {deadline_s} s")


def _idle_by_cpu(window_s: float = 0.5) -> dict[int, int]:
    """Idle jiffies of each CPU over a short window (/proc/stat)."""
    def read() -> dict[int, int]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                fields = [int(x) for x in m.group(2).split()]
                out[int(m.group(1))] = fields[3] + fields[4]     # idle + iowait
        return out
    a = read()
    time.sleep(window_s)
    b = read()
    return {cpu: b[cpu] - a.get(cpu, 0) for cpu in b}


def _cores() -> tuple[set[int], set[int]]:
    """(sidecar core, load generator cores) for the max req/s phase: the idlest core for the
    proxy (other tenants' benchmarks tend to pin to the first), the others for the load."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    idle = _idle_by_cpu()
    proxy = max(cpus, key=lambda c: idle.get(c, 0))
    return {proxy}, set(cpus) - {proxy}


def _pinned(cores: set[int]):
    return lambda: os.sched_setaffinity(0, cores)


def _pin_process(pid: int, cores: set[int]) -> None:
    for tid in os.listdir(f"/proc/{pid}/task"):     # each of its threads
        os.sched_setaffinity(int(tid), cores)


def _sched_s(pids: list[int]) -> tuple[float, float]:
    """(CPU seconds, seconds runnable but waiting for a CPU) of every thread of these
    processes, from schedstat (ns resolution, not 10 ms ticks)."""
    cpu_ns = wait_ns = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
                cpu_ns += int(fields[0])
                wait_ns += int(fields[1])
            except (OSError, ValueError, IndexError):   # a thread that just ended
                continue
    return cpu_ns / 1e9, wait_ns / 1e9


def _tree(pid: int) -> list[int]:
    """A process and its children (nginx's master and worker)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return [pid, *(int(k) for k in kids)]


def _cpu_pressure_s() -> float:
    """Seconds some runnable task waited for a CPU, machine-wide (PSI, /proc/pressure/cpu)."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return 0.0
    return int(first.rsplit("total=", 1)[1]) / 1e6


def _steal_s() -> float:
    """Seconds all CPUs had work but the hypervisor ran another guest (/proc/stat steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def wrk(wrk_path: str, script: Path, port: int, cores: set[int], duration_s: float, *,
        conns: int, think_ms: float = 0.0, seed: int = 1) -> dict:
    """One wrk run (one thread): requests, req/s, p50/p99 in ms, errors (non-2xx included)."""
    env = {**os.environ, "TRIMTAB_THINK_MS": str(think_ms), "TRIMTAB_SEED": str(seed)}
    out = subprocess.run([wrk_path, "-t1", f"-c{conns}", f"-d{max(1, round(duration_s))}s",
                          "-s", str(script), f"http://127.0.0.1:{port}"],
                         capture_output=True, text=True, env=env, preexec_fn=_pinned(cores),
                         timeout=duration_s + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(RESULT_MARK)), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk against port {port} failed (exit {out.returncode}): "
                           f"{(out.stderr or out.stdout).strip()[-300:]}")
    r = json.loads(line[len(RESULT_MARK):])
    return {"n": r["n"], "rps": r["n"] / max(r["duration_us"] / 1e6, 1e-9),
            "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "errors": r["errors"]}


def exposition_ms(repeats: int = 50) -> tuple[float, int]:
    """Median time of one /metrics page with 8 fake GPUs and 10 models, and its series count."""
    from prometheus_client import disable_created_metrics, generate_latest

    from trimtab.collectors.fake_nvml import FakeGpuConfig, FakeNVML, FakeProcess
    from trimtab.collectors.settings import SidecarConfig
    from trimtab.collectors.sidecar import Sidecar
    disable_created_metrics()
    nvml = FakeNVML(FakeGpuConfig(count=8, utilization_ratio=0.6, processes={
        i: [FakeProcess(pid=100 + i, name="tritonserver", used_memory_bytes=2 ** 34)]
        for i in range(8)}))
    sc = Sidecar(SidecarConfig(upstream="http://127.0.0.1:9", proxy=True, gpu="fake",
                               models=MODELS, slo_latency_s=(0.5,)), nvml=nvml)
    sc.gpu.poll_once()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        page = generate_latest(sc.registry)
        times.append(time.perf_counter() - t0)
    series = sum(1 for ln in page.decode().splitlines() if ln and not ln.startswith("#"))
    return statistics.median(times) * 1000, series


def serve_bare(port: int) -> None:
    """A bare aiohttp server with the upstream's answer, on the sidecar's event loop: the
    floor any aiohttp proxy sits on."""
    import asyncio

    from aiohttp import web

    from trimtab.collectors.sidecar import run_loop

    async def answer(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=b'{"outputs":[]}', content_type="application/json")

    async def run() -> None:
        server = web.Server(answer, access_log=None)
        await asyncio.get_running_loop().create_server(server, "127.0.0.1", port)
        await asyncio.Event().wait()

    run_loop(run())


def _tools() -> tuple[str, str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    wrk_path = shutil.which("wrk") or "/usr/bin/wrk"
    missing = [name for name, path in (("nginx", nginx), ("wrk", wrk_path))
               if not Path(path).exists()]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} not found: install the Debian packages "
                         "(make debs)")
    return nginx, wrk_path


def run_bench(json_path: Path | None = None, *, quick: bool = False) -> dict:
    nginx, wrk_path = _tools()
    phase_s = 1.0                            # per round and target
    rounds = 2 if quick else ROUNDS
    tmp = Path(tempfile.mkdtemp(prefix="trimtab-bench-"))
    up_port, ngx_port, sc_port, admin_port = (free_port() for _ in range(4))
    for name, servers in (("upstream", UPSTREAM_SERVER.format(upstream=up_port)),
                          ("reference", REFERENCE_SERVER.format(upstream=up_port,
                                                                proxy=ngx_port))):
        (tmp / f"{name}.conf").write_text(NGINX_HTTP.format(tmp=tmp, name=name, servers=servers))
    script = tmp / "bench.lua"
    script.write_text(WRK_SCRIPT)
    gpu_file = tmp / "gpus.yaml"
    gpu_file.write_text("count: 8\nutilization_ratio: 0.6\n")
    all_cores = set(os.sched_getaffinity(0))
    procs: list[subprocess.Popen] = []
    load_before = os.getloadavg()[0]
    steal0, wall0 = _steal_s(), time.monotonic()
    try:
        console.print(f"[bold]sidecar bench[/]: {RATE_PER_S:.0f} req/s from wrk "
                      f"({LATENCY_CONNS} connections, exponential think times), "
                      f"{rounds} rounds of {phase_s:.0f} s per target; load average "
                      f"{load_before:.1f} on {os.cpu_count()} CPUs")
        nginx_procs = {name: subprocess.Popen([nginx, "-p", str(tmp), "-c",
                                               str(tmp / f"{name}.conf")],
                                              stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL)
                       for name in ("upstream", "reference")}
        procs.extend(nginx_procs.values())
        sidecar = subprocess.Popen(
            [sys.executable, "-m", "trimtab.cli", "sidecar", "--proxy", "--gpu", "fake",
             "--fake-gpu-config", str(gpu_file), "--gpu-poll-s", "1",
             "--upstream", f"http://127.0.0.1:{up_port}", "--listen", f"127.0.0.1:{sc_port}",
             "--metrics-port", str(admin_port), "--concurrency-limit", "1024",
             "--max-queue-length", "4096", "--log-level", "warning",
             *[a for m in MODELS for a in ("--model", m)], "--slo-latency-s", "0.5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sidecar)
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, "-m", "trimtab.collectors.bench",
                                 "--serve-bare", str(bare_port)])
        procs.append(bare)
        for port in (up_port, ngx_port, sc_port, admin_port, bare_port):
            _wait_port(port)

        console.print("idle CPU of the sidecar (1 s GPU poll, 8 fake GPUs) ...")
        time.sleep(1.0)
        idle_s = 3.0 if quick else 10.0
        c0, t0 = _sched_s([sidecar.pid])[0], time.monotonic()
        time.sleep(idle_s)
        idle_ratio = (_sched_s([sidecar.pid])[0] - c0) / (time.monotonic() - t0)

        console.print("latency: warm-up, then direct / nginx / bare aiohttp / sidecar, "
                      "interleaved ...")
        think_ms = LATENCY_CONNS / RATE_PER_S * 1000
        targets = {"direct": (up_port, []), "nginx": (ngx_port, _tree(nginx_procs["reference"].pid)),
                   "bare": (bare_port, [bare.pid]), "sidecar": (sc_port, [sidecar.pid])}
        for port, _ in targets.values():
            wrk(wrk_path, script, port, all_cores, 1.0, conns=LATENCY_CONNS, think_ms=think_ms)
        runs: dict[str, list[dict]] = {k: [] for k in targets}
        psi0, lat0 = _cpu_pressure_s(), time.monotonic()
        for rnd in range(rounds):   # interleaved, so drift in machine load hits all three
            for name, (port, pids) in targets.items():
                s0, w0 = _sched_s(pids)
                r = wrk(wrk_path, script, port, all_cores, phase_s, conns=LATENCY_CONNS,
                        think_ms=think_ms, seed=1 + rnd)
                s1, w1 = _sched_s(pids)
                r["cpu_us_per_request"] = (s1 - s0) / max(r["n"], 1) * 1e6
                r["run_wait_ms_per_s"] = (w1 - w0) / phase_s * 1000
                runs[name].append(r)
        cpu_pressure = (_cpu_pressure_s() - psi0) / (time.monotonic() - lat0)

        sc_core, gen_cores = _cores()
        console.print(f"max req/s: closed loop, {SATURATION_CONNS} connections, sidecar pinned "
                      f"to core {sorted(sc_core)}, wrk and the upstream to {sorted(gen_cores)} ...")
        sat_s = 2.0 if quick else 5.0
        _pin_process(sidecar.pid, sc_core)
        for pid in _tree(nginx_procs["upstream"].pid):
            _pin_process(pid, gen_cores)
        (c0, q0), w0 = _sched_s([sidecar.pid]), time.monotonic()
        max_rps = wrk(wrk_path, script, sc_port, gen_cores, sat_s, conns=SATURATION_CONNS)
        (c1, q1), sat_wall_s = _sched_s([sidecar.pid]), time.monotonic() - w0
        busy_s = c1 - c0
        core_share = busy_s / sat_wall_s     # < 1: other processes took the core
        cpu_us_per_request = busy_s / max(1, max_rps["n"]) * 1e6
        gen_rps = wrk(wrk_path, script, up_port, gen_cores, sat_s, conns=SATURATION_CONNS)
        _pin_process(bare.pid, sc_core)
        bare_rps = wrk(wrk_path, script, bare_port, gen_cores, sat_s, conns=SATURATION_CONNS)
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)
    steal_share = (_steal_s() - steal0) / (time.monotonic() - wall0) / max(1, os.cpu_count() or 1)

    console.print("exposition: 8 fake GPUs, 10 models ...")
    expo_ms, series = exposition_ms()
    result = {"proxy": _proxy_figures(runs, rounds, max_rps, gen_rps, bare_rps,
                                      cpu_us_per_request, core_share, (q1 - q0) / sat_wall_s),
              "metrics": {"exposition_ms": round(expo_ms, 3), "series": series},
              "idle_cpu_ratio": round(idle_ratio, 4),
              "targets": {"added_p99_ms_max": 1.0, "max_rps_min": 3000, "exposition_ms_max": 20,
                          "idle_cpu_ratio_max": 0.02},
              "machine": {"load_average_1m_before": round(load_before, 2),
                          "load_average_1m_after": round(os.getloadavg()[0], 2),
                          "cpus": os.cpu_count(), "steal_share": round(steal_share, 4),
                          # share of the latency phase in which some task waited for a CPU
                          "cpu_pressure_share": round(cpu_pressure, 3)}}
    _print_table(result, expo_ms, series, idle_ratio)
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


def _proxy_figures(runs: dict[str, list[dict]], rounds: int, max_rps: dict, gen_rps: dict,
                   bare_rps: dict, cpu_us_per_request: float, core_share: float,
                   sat_wait_share: float) -> dict:
    # A stall of the whole machine (other tenants) lands in one round; the median over rounds
    # of each round's added p99 is robust to it.
    def added(name: str, q: str) -> list[float]:
        return [runs[name][i][q] - runs["direct"][i][q] for i in range(rounds)]

    def med(values: list[float]) -> float:
        return float(statistics.median(values))

    added_p50, added_p99 = med(added("sidecar", "p50_ms")), med(added("sidecar", "p99_ms"))
    nginx_p50, nginx_p99 = med(added("nginx", "p50_ms")), med(added("nginx", "p99_ms"))
    r3 = lambda x: round(x, 3)   # noqa: E731
    return {
        "added_p50_ms": r3(added_p50), "added_p99_ms": r3(added_p99),
        "nginx_added_p50_ms": r3(nginx_p50), "nginx_added_p99_ms": r3(nginx_p99),
        # None when nginx's added figure is within the noise (<= 0): no honest ratio
        "ratio_to_nginx": round(added_p99 / nginx_p99, 2) if nginx_p99 > 0 else None,
        "ratio_to_nginx_p50": round(added_p50 / nginx_p50, 2) if nginx_p50 > 0 else None,
        "added_p99_by_round_ms": [r3(x) for x in added("sidecar", "p99_ms")],
        "nginx_added_p99_by_round_ms": [r3(x) for x in added("nginx", "p99_ms")],
        # a bare aiohttp server answering itself (no upstream hop): the floor of this stack
        "bare_aiohttp_added_p50_ms": r3(med(added("bare", "p50_ms"))),
        "bare_aiohttp_added_p99_ms": r3(med(added("bare", "p99_ms"))),
        "bare_aiohttp_cpu_us_per_request_at_rate": round(med([r["cpu_us_per_request"]
                                                              for r in runs["bare"]]), 1),
        # time runnable but waiting for a CPU, per second of each phase: other tenants
        "run_wait_ms_per_s": r3(med([r["run_wait_ms_per_s"] for r in runs["sidecar"]])),
        "nginx_run_wait_ms_per_s": r3(med([r["run_wait_ms_per_s"] for r in runs["nginx"]])),
        "cpu_us_per_request_at_rate": round(med([r["cpu_us_per_request"]
                                                 for r in runs["sidecar"]]), 1),
        "nginx_cpu_us_per_request_at_rate": round(med([r["cpu_us_per_request"]
                                                       for r in runs["nginx"]]), 1),
        "rate_per_s": RATE_PER_S,
        "achieved_rate_per_s": round(med([r["rps"] for r in runs["sidecar"]]), 1),
        "requests_per_target": sum(r["n"] for r in runs["sidecar"]),
        "errors": sum(r["errors"] for rs in runs.values() for r in rs),
        "direct_p50_ms": r3(med([r["p50_ms"] for r in runs["direct"]])),
        "direct_p99_ms": r3(med([r["p99_ms"] for r in runs["direct"]])),
        "max_rps": round(max_rps["rps"]), "max_rps_errors": max_rps["errors"],
        "cpu_us_per_request": round(cpu_us_per_request, 1),
        "core_share_during_max_rps": round(core_share, 2),
        "run_wait_share_during_max_rps": round(sat_wait_share, 2),
        "cpu_bound_max_rps": round(1e6 / cpu_us_per_request),
        "bare_aiohttp_max_rps": round(bare_rps["rps"]),
        "max_rps_ratio_to_bare_aiohttp": round(max_rps["rps"] / bare_rps["rps"], 2),
        "generator_max_rps": round(gen_rps["rps"]),
        "generator": "wrk",
    }


def _print_table(result: dict, expo_ms: float, series: int, idle_ratio: float) -> None:
    table = Table(title="trimtab sidecar bench")
    for col in ("figure", "value", "target"):
        table.add_column(col)
    p, m = result["proxy"], result["machine"]
    table.add_row("added p50 / p99 (ms)", f"{p['added_p50_ms']} / {p['added_p99_ms']}", "p99 <= 1")
    table.add_row("nginx added p50 / p99 (ms)", f"{p['nginx_added_p50_ms']} / "
                  f"{p['nginx_added_p99_ms']}", "reference")
    table.add_row("ratio to nginx (p99)", str(p["ratio_to_nginx"]), "")
    table.add_row("bare aiohttp server, no hop: added p50 / p99 (ms)",
                  f"{p['bare_aiohttp_added_p50_ms']} / {p['bare_aiohttp_added_p99_ms']}",
                  "this stack's floor")
    table.add_row("run-queue wait, sidecar / nginx (ms/s)",
                  f"{p['run_wait_ms_per_s']} / {p['nginx_run_wait_ms_per_s']}", "other tenants")
    table.add_row("CPU per request at the rate, sidecar / nginx / bare aiohttp (µs)",
                  f"{p['cpu_us_per_request_at_rate']} / {p['nginx_cpu_us_per_request_at_rate']}"
                  f" / {p['bare_aiohttp_cpu_us_per_request_at_rate']}", "")
    table.add_row("max req/s (one core)", str(p["max_rps"]), ">= 3000")
    table.add_row("CPU per proxied request (µs)", f"{p['cpu_us_per_request']} (= "
                  f"{p['cpu_bound_max_rps']} req/s on a whole core; it got "
                  f"{p['core_share_during_max_rps']:.0%})", "")
    table.add_row("bare aiohttp server max req/s", f"{p['bare_aiohttp_max_rps']} (proxy at "
                  f"{p['max_rps_ratio_to_bare_aiohttp']}x)", "baseline")
    table.add_row("generator max req/s (wrk, direct)", str(p["generator_max_rps"]),
                  "> max req/s")
    table.add_row("exposition (ms)", f"{expo_ms:.2f} ({series} series)", "< 20")
    table.add_row("idle CPU (share of a core)", f"{idle_ratio:.4f}", "< 0.02")
    table.add_row("load average before / after, steal", f"{m['load_average_1m_before']} / "
                  f"{m['load_average_1m_after']} on {m['cpus']} CPUs, "
                  f"{m['steal_share']:.1%}", "")
    table.add_row("CPU pressure (some task waiting) during latency", f"{m['cpu_pressure_share']:.0%}",
                  "other tenants")
    console.print(table)


if __name__ == "__main__":     # python -m trimtab.collectors.bench --serve-bare PORT
    if len(sys.argv) != 3 or sys.argv[1] != "--serve-bare":
        raise SystemExit("usage: python -m trimtab.collectors.bench --serve-bare PORT")
    serve_bare(int(sys.argv[2]))
