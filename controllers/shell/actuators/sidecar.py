"""Sidecar actuator: finds a workload's pods through the Kubernetes API and PUTs settings to each sidecar."""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from trimtab.controllers.shell.actuators.base import ActuationError, Actuator, Applied, WorkloadRef
from trimtab.controllers.shell.actuators.kubernetes import error_of
from trimtab.controllers.core.types import Decision

log = logging.getLogger("trimtab.controller.sidecar")

ADMIN_PORT_NAME = "trimtab-admin"
SETTINGS_PATH = "/control/v1/settings"
KNOBS = ("concurrency_limit", "max_batch_size", "batch_timeout_ms", "queue_timeout_s")


@dataclass(frozen=True)
class SidecarEndpoint:
    """How to reach one workload's sidecars: admin port (unless a container port names one)."""

    token_file: str
    admin_port: int = 9400
    timeout_s: float = 2.0

    def token(self) -> str:
        # Read on every use so a rotated Secret takes effect without a restart.
        return Path(self.token_file).read_text().strip()


def _ready(pod: Any) -> bool:
    if pod.status is None or pod.status.phase != "Running" or not pod.status.pod_ip:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _admin_port(pod: Any, default: int) -> int:
    for c in pod.spec.containers or []:
        for p in c.ports or []:
            if p.name == ADMIN_PORT_NAME:
                return int(p.container_port)
    return default


class SidecarActuator(Actuator):
    """Pushes pod-level knobs to every ready pod; new pods get the workload's current settings.

    Pods are written in parallel with a short timeout, so one hung pod never blocks the rest;
    a pod that fails is retried on the next call and named in the raised ActuationError.
    """

    name = "sidecar"
    sets_replicas = False     # pod knobs only: the replica count is another actuator's

    def __init__(self, api_client: client.ApiClient, endpoints: dict[str, SidecarEndpoint],
                 max_workers: int = 16) -> None:
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.endpoints = endpoints
        self.max_workers = max_workers
        self.settings: dict[str, dict[str, object]] = {}     # workload key -> settings wanted
        self.confirmed: dict[str, dict[str, object]] = {}    # pod uid -> settings it holds
        self.failed: dict[str, str] = {}                     # pod name -> last error

    def current_replicas(self, workload: WorkloadRef) -> int | None:
        return None

    def _selector(self, w: WorkloadRef) -> str:
        fn = (self.apps.read_namespaced_deployment if w.kind == "Deployment"
              else self.apps.read_namespaced_stateful_set)
        try:
            obj = fn(w.name, w.namespace, _request_timeout=5.0)
        except Exception as exc:
            raise error_of(exc) from exc
        labels = obj.spec.selector.match_labels or {}
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))

    def apply(self, workload: WorkloadRef, decision: Decision, reason: str) -> Applied:
        wanted = {k: getattr(decision, k) for k in KNOBS if getattr(decision, k) is not None}
        if decision.valid and wanted:
            self.settings[workload.key] = {**self.settings.get(workload.key, {}), **wanted}
        return self.resync(workload)

    def resync(self, workload: WorkloadRef) -> Applied:
        """Bring every ready pod to the workload's current settings (no-op when none are set)."""
        endpoint = self.endpoints.get(workload.key)
        settings = self.settings.get(workload.key)
        if endpoint is None or not settings:
            return Applied()
        try:
            pods = self.core.list_namespaced_pod(workload.namespace,
                                                 label_selector=self._selector(workload),
                                                 _request_timeout=5.0).items
        except ActuationError:
            raise
        except Exception as exc:
            raise error_of(exc) from exc
        todo = [p for p in pods if _ready(p) and self.confirmed.get(p.metadata.uid) != settings]
        if not todo:
            return Applied()
        token = endpoint.token()
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(todo))) as pool:
            results = list(pool.map(lambda p: self._put(p, endpoint, token, settings), todo))
        failed = {name: err for name, err in results if err}
        for name, _ in results:
            self.failed.pop(name, None)
        self.failed.update(failed)
        changed = {f"pod/{name}": (None, dict(settings)) for name, err in results if not err}
        if failed:
            names = ", ".join(f"{n} ({e})" for n, e in sorted(failed.items()))
            raise ActuationError("sidecar_unreachable" if any(
                "unreachable" in e for e in failed.values()) else "sidecar_error",
                f"{workload.key}: {len(failed)} of {len(todo)} pods failed: {names}")
        return Applied(changes=changed)

    def _put(self, pod: Any, endpoint: SidecarEndpoint, token: str,
             settings: dict[str, object]) -> tuple[str, str]:
        name = pod.metadata.name
        url = f"http://{pod.status.pod_ip}:{_admin_port(pod, endpoint.admin_port)}{SETTINGS_PATH}"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            # The sidecar keeps all knobs at once: read them, change only what we steer.
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=endpoint.timeout_s) as resp:
                body = {k: v for k, v in json.load(resp).items() if k in KNOBS}
            body.update(settings)
            req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT",
                                         headers=headers)
            with urllib.request.urlopen(req, timeout=endpoint.timeout_s):
                pass
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace")
            log.warning("pod %s: sidecar answered %s: %s", name, exc.code, detail)
            return name, f"http_{exc.code}"
        except (OSError, ValueError) as exc:
            log.warning("pod %s: sidecar unreachable: %s", name, exc)
            return name, "unreachable"
        self.confirmed[pod.metadata.uid] = dict(settings)
        return name, ""
