"""Start and stop a local Ray cluster with Ray Serve and the demo model, deployed from a config.

The app is deployed the way production Ray Serve is (a declarative config with an
``import_path``, as ``serve deploy`` and KubeRay's RayService do), which is what lets the
Ray Serve actuator change replicas and batch settings in place. Everything started here is
stopped by ``stop()``: Serve, then Ray, then any process left that names this run's Ray
temp dir (killed by pid, never by name).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimtab.up import wall_clock
from trimtab.controllers.shell.actuators.base import WorkloadRef
from trimtab.controllers.shell.actuators.ray_serve import INSTALL_HINT, KIND

log = logging.getLogger(__name__)

APP_NAME = "demo"
DEPLOYMENT_NAME = "mlp"
IMPORT_PATH = "trimtab.up.model:app"


class RayMissingError(RuntimeError):
    """Ray Serve is not installed; the message says how to install the extra."""


@dataclass
class FleetConfig:
    """The demo fleet: how much of this machine Ray may use and the model's starting settings."""

    http_port: int
    metrics_port: int
    num_cpus: float = 2.0
    replicas: int = 1
    max_ongoing_requests: int = 16
    max_batch_size: int = 4
    batch_wait_timeout_s: float = 0.005
    replica_num_cpus: float = 0.25
    base_ms: float = 40.0
    per_item_ms: float = 60.0


def require_ray() -> Any:
    """Import Ray Serve or raise RayMissingError naming the extra to install."""
    try:
        import ray
        import ray.serve  # noqa: F401
    except ImportError as exc:
        raise RayMissingError(INSTALL_HINT) from exc
    return ray


def app_config(cfg: FleetConfig) -> dict:
    """The declarative Serve config of the demo app (the shape ``serve deploy`` reads)."""
    return {
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": IMPORT_PATH,
            "args": {},
            "deployments": [{
                "name": DEPLOYMENT_NAME,
                "num_replicas": cfg.replicas,
                "max_ongoing_requests": cfg.max_ongoing_requests,
                "ray_actor_options": {"num_cpus": cfg.replica_num_cpus,
                                      "runtime_env": {"env_vars": {
                                          "OMP_NUM_THREADS": "1",
                                          "OPENBLAS_NUM_THREADS": "1",
                                          "TRIMTAB_BASE_MS": str(cfg.base_ms),
                                          "TRIMTAB_PER_ITEM_MS": str(cfg.per_item_ms)}}},
                "user_config": {"trimtab": {
                    "max_batch_size": cfg.max_batch_size,
                    "batch_wait_timeout_s": cfg.batch_wait_timeout_s}},
            }],
        }],
    }


@dataclass
class RayFleet:
    """``with RayFleet(cfg) as fleet:`` a running demo app at ``fleet.url``."""

    cfg: FleetConfig
    temp_dir: str = ""
    started: bool = False
    _ray: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.http_port}/"

    @property
    def workload(self) -> WorkloadRef:
        return WorkloadRef(KIND, APP_NAME, DEPLOYMENT_NAME)

    def start(self, timeout_s: float = 90.0, attempts: int = 2) -> "RayFleet":
        """Start Ray, Serve and the app; on a loaded machine Serve's HTTP proxy may miss its
        own 60 s start deadline, so a failed start is torn down and tried once more."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout_s)
            except Exception as exc:  # Ray raises its own error types; all mean "not up"
                if attempt == attempts:
                    raise
                log.warning("Ray Serve did not start (%s: %s); retrying from scratch",
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                self.stop()
        raise AssertionError("unreachable")

    def _start_once(self, timeout_s: float) -> "RayFleet":
        ray = require_ray()
        from ray import serve
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        # A short path: Ray puts unix sockets under it (limit ~107 characters).
        self.temp_dir = tempfile.mkdtemp(prefix="ttray-", dir="/tmp")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self._ray = ray
        self.started = True
        ray.init(num_cpus=self.cfg.num_cpus, include_dashboard=False,
                 _metrics_export_port=self.cfg.metrics_port, _temp_dir=self.temp_dir,
                 log_to_driver=False, configure_logging=False,
                 # Replicas report their metrics every 2 s instead of 10 s, so the batch
                 # samples the policy fits its capacity model on are fresh.
                 _system_config={"metrics_report_interval_ms": 2000})
        serve.start(http_options={"host": "127.0.0.1", "port": self.cfg.http_port})
        client = _get_global_client()
        client.deploy_apps(ServeDeploySchema.model_validate(app_config(self.cfg)))
        self.wait_running(timeout_s)
        return self

    def wait_running(self, timeout_s: float) -> None:
        from ray import serve

        deadline_s = wall_clock.now_s() + timeout_s
        while wall_clock.now_s() < deadline_s:
            app = serve.status().applications.get(APP_NAME)
            if app is not None and app.status == "RUNNING":
                return
            if app is not None and app.status == "DEPLOY_FAILED":
                raise RuntimeError(f"demo app failed to deploy: {app.message}")
            wall_clock.sleep_s(0.25)
        raise TimeoutError(f"demo app not RUNNING after {timeout_s} s")

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        try:
            from ray import serve
            serve.shutdown()
        except Exception as exc:  # already gone: Ray's shutdown below still runs
            log.debug("serve.shutdown: %s", exc)
        try:
            self._ray.shutdown()
        except Exception as exc:
            log.debug("ray.shutdown: %s", exc)
        kill_strays(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "RayFleet":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stray_pids(marker: str) -> list[int]:
    """Pids of processes whose command line contains ``marker`` (this run's temp dir)."""
    if not marker:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def kill_strays(marker: str, grace_s: float = 3.0) -> list[int]:
    """SIGTERM, then SIGKILL, the processes left from this run's Ray cluster."""
    pids = stray_pids(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline_s = wall_clock.now_s() + grace_s
    while wall_clock.now_s() < deadline_s and stray_pids(marker):
        wall_clock.sleep_s(0.1)
    for pid in stray_pids(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids
