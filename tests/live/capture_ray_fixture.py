"""Record Ray Serve's details payload from a real local Serve: ``python -m tests.live.capture_ray_fixture``.

Starts Ray and Serve the way the live demo does (trimtab/up/fleet.py), deploys from one
declarative config the demo application ``demo`` (deployment ``mlp``, 2 replicas, a user_config
key of its own beside trimtab's section) and a second small application ``other`` (1 replica,
route ``/other``), waits until both are RUNNING with every replica RUNNING, then writes what
``ServeControllerClient.get_serve_details()`` answers (the call the Ray Serve actuator makes)
to tests/live/fixtures/ray-serve-<version>-details.json, whole. Ray is shut down after.
"""
from __future__ import annotations

import copy
import enum
import json
import socket
import sys
import time
from pathlib import Path

from trimtab.up.fleet import APP_NAME, DEPLOYMENT_NAME, FleetConfig, RayFleet, app_config

FIXTURES = Path(__file__).parent / "fixtures"
OTHER_APP = "other"
DEMO_REPLICAS = 2
# A key of the deployment's own, beside trimtab's section: the actuator must keep it.
OWN_USER_CONFIG = {"threshold": 0.3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_app_config(cfg: FleetConfig) -> dict:
    """The demo app (with a user_config key of its own) and a one-replica ``other`` app."""
    config = app_config(cfg)
    (demo,) = config["applications"]
    demo["deployments"][0]["user_config"].update(OWN_USER_CONFIG)
    other = copy.deepcopy(demo)
    other.update(name=OTHER_APP, route_prefix=f"/{OTHER_APP}")
    other["deployments"][0].update(num_replicas=1, user_config={"trimtab": {"max_batch_size": 1}})
    config["applications"].append(other)
    return config


def all_running(details: dict) -> bool:
    apps = details.get("applications") or {}
    if set(apps) != {APP_NAME, OTHER_APP}:
        return False
    for app in apps.values():
        if str(getattr(app.get("status"), "value", app.get("status"))) != "RUNNING":
            return False
        for dep in (app.get("deployments") or {}).values():
            states = [str(getattr(r.get("state"), "value", r.get("state")))
                      for r in dep.get("replicas") or []]
            if len(states) != dep.get("target_num_replicas") or \
                    any(s != "RUNNING" for s in states):
                return False
    return True


def as_json(value: object) -> object:
    """Ray's in-process details hold enums; over REST (and here) they are their values."""
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"not JSON: {type(value).__name__}")


def capture(timeout_s: float = 240.0) -> Path:
    import ray
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    cfg = FleetConfig(http_port=free_port(), metrics_port=free_port(), replicas=DEMO_REPLICAS)
    started_s = time.monotonic()
    with RayFleet(cfg) as fleet:
        client = _get_global_client()
        client.deploy_apps(ServeDeploySchema.model_validate(two_app_config(cfg)))
        deadline_s = time.monotonic() + timeout_s
        while True:
            details = client.get_serve_details()
            if all_running(details):
                break
            if time.monotonic() > deadline_s:
                raise TimeoutError(f"apps not all RUNNING after {timeout_s} s: "
                                   f"{json.dumps(details, default=as_json)[:2000]}")
            time.sleep(0.5)
        assert fleet.workload.namespace == APP_NAME and fleet.workload.name == DEPLOYMENT_NAME
        path = FIXTURES / f"ray-serve-{ray.__version__}-details.json"
        FIXTURES.mkdir(exist_ok=True)
        path.write_text(json.dumps(details, indent=1, sort_keys=True, default=as_json) + "\n")
    print(f"recorded in {time.monotonic() - started_s:.0f} s (start to Ray shut down)",
          file=sys.stderr)
    return path


if __name__ == "__main__":
    print(capture())
