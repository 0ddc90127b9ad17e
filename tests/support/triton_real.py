"""A real tritonserver on loopback for the `triton` tests, serving a model repository of our own.

`make triton` (tools/triton/setup.sh) unpacks tritonserver 2.51.0 from the nvidia-pytriton wheel
into a cache outside the checkout; `make debs` installs Debian's libpython3.11 and python3-numpy,
which its Python backend stub embeds and imports. These helpers write a repository of Python
backend models (``model.py``: ``OUTPUT = 2 * INPUT + 1`` over float32 rows, a failed execution
for a negative input, with an optional
sleep per execution so that dynamic batching has time to gather requests), start the server in
explicit model-control mode on free ports, wait until it is ready, and stop it. They fail (never
skip) when the server is missing.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from trimtab.common.ports import LOOPBACK, free_port
from trimtab.common.process import stop_process, wait_http_ok

TRITON_VERSION = "2.51.0"
ROW_WIDTH = 4                         # each request row is ROW_WIDTH float32 values
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"

MODEL_PY = textwrap.dedent('''\
    """OUTPUT = 2 * INPUT + 1 row by row. A negative value fails the execution (Triton counts a
    BACKEND failure for every request in it); a value at or below -1000 gets an error answer
    (which Triton 2.51 counts as a success). Sleeps sleep_s (a parameter) per execution."""
    import time

    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            params = __import__("json").loads(args["model_config"]).get("parameters", {})
            self.sleep_s = float(params.get("sleep_s", {}).get("string_value", "0"))

        def execute(self, requests):
            if self.sleep_s:
                time.sleep(self.sleep_s)
            out = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
                if (x <= -1000).any():        # an error answer: Triton counts a success
                    out.append(pb_utils.InferenceResponse(
                        error=pb_utils.TritonError("input at or below -1000")))
                    continue
                if (x < 0).any():             # the execution fails: a BACKEND failure
                    raise pb_utils.TritonModelException("negative input")
                y = (2.0 * x + 1.0).astype(np.float32)
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", y)]))
            return out
    ''')


def server_path() -> Path:
    """Where tools/triton/setup.sh puts tritonserver (keep the two in step)."""
    cache = os.environ.get("TRIMTAB_TRITON_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trimtab" / "triton")
    return Path(cache) / f"server-{TRITON_VERSION}" / "pytriton" / "tritonserver" / "bin" / "tritonserver"


def require_tritonserver() -> Path:
    """The unpacked tritonserver, or the test fails saying how to install it."""
    path = server_path()
    if not os.access(path, os.X_OK):
        pytest.fail(f"tritonserver not found at {path}: run `make triton` (tools/triton/setup.sh "
                    f"unpacks tritonserver {TRITON_VERSION} from the nvidia-pytriton wheel)")
    if not Path("/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0").exists() or not (
            Path(DEBIAN_DIST_PACKAGES) / "numpy").is_dir():
        pytest.fail("Debian's libpython3.11 and python3-numpy are missing (Triton's Python "
                    "backend stub needs them): run `make debs`")
    return path


def model_config(name: str, max_batch_size: int = 8, max_queue_delay_us: int = 2000,
                 instances: int = 1, sleep_s: float = 0.0) -> str:
    """A config.pbtxt for the model above; ``max_batch_size=0`` is a model that cannot batch."""
    batching = (f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n"
                if max_batch_size > 0 else "")
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
            f'input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ {ROW_WIDTH} ] }} ]\n'
            f'output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ {ROW_WIDTH} ] }} ]\n'
            f"{batching}"
            f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
            f'parameters {{ key: "sleep_s" value: {{ string_value: "{sleep_s:g}" }} }}\n')


def write_repository(root: Path, models: dict[str, dict]) -> Path:
    """A model repository with one Python backend model per entry (``model_config`` kwargs)."""
    for name, kwargs in models.items():
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "1" / "model.py").write_text(MODEL_PY)
        (root / name / "config.pbtxt").write_text(model_config(name, **kwargs))
    return root


@dataclass
class Triton:
    """A running tritonserver: its HTTP API and metrics URLs, its process and log."""

    url: str
    metrics_url: str
    proc: subprocess.Popen
    log_path: Path

    def get_json(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())

    def post_json(self, path: str, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=30) as resp:
            return resp.read().decode()


def infer_body(rows: list[list[float]]) -> dict:
    """A KServe v2 inference request of len(rows) rows."""
    flat = [float(x) for row in rows for x in row]
    return {"inputs": [{"name": "INPUT", "shape": [len(rows), ROW_WIDTH], "datatype": "FP32",
                        "data": flat}]}


def raw_sample(text: str, name: str, model: str) -> float:
    """The one sample of ``name`` for ``model`` (version 1) in Triton's metrics text."""
    found = re.findall(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.M)
    if len(found) != 1:
        raise AssertionError(f"{len(found)} samples of {name} for {model} in the metrics text")
    return float(found[0])


def stub_env() -> dict[str, str]:
    """The server's environment: none of the venv's Python or libraries, Debian's numpy.

    With another libpython on the library path the stub ignores PYTHONPATH, imports another
    numpy and its answers fail with "output tensor shape does not match".
    """
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": DEBIAN_DIST_PACKAGES, "LANG": "C.UTF-8"}


def start_triton(repository: Path, load: tuple[str, ...], log_path: Path,
                 timeout_s: float = 90.0) -> Triton:
    """tritonserver on free loopback ports, explicit model control, ``load`` loaded at start."""
    server = require_tritonserver()
    root = server.parent.parent
    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [str(server), f"--model-repository={repository}",
           f"--backend-directory={root / 'backends'}", f"--cache-directory={root / 'caches'}",
           "--model-control-mode=explicit", *[f"--load-model={m}" for m in load],
           f"--http-address={LOOPBACK}", f"--http-port={http}",
           f"--grpc-address={LOOPBACK}", f"--grpc-port={grpc}",
           f"--metrics-address={LOOPBACK}", f"--metrics-port={metrics}",
           "--allow-gpu-metrics=false", "--exit-timeout-secs=5", "--log-verbose=0"]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=stub_env(),
                            start_new_session=True)
    log.close()
    url = f"http://{LOOPBACK}:{http}"
    try:
        wait_http_ok(url + "/v2/health/ready", proc, timeout_s=timeout_s, log_path=log_path,
                     what="tritonserver")
    except BaseException:
        stop_process(proc)
        raise
    return Triton(url=url, metrics_url=f"http://{LOOPBACK}:{metrics}/metrics", proc=proc,
                  log_path=log_path)


def running_triton(repository: Path, load: tuple[str, ...], log_path: Path) -> Iterator[Triton]:
    """``start_triton`` for a fixture: yields the server, stops it after."""
    triton = start_triton(repository, load, log_path)
    try:
        yield triton
    finally:
        stop_process(triton.proc, grace_s=10)
