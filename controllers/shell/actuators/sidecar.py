"""Sidecar actuator: finds a workload's pods through the Kubernetes API and PUTs settings to each sidecar.

``SidecarControlClient`` is the sidecar's control API on its own (read and change the knobs);
the gate actuator of the live demo uses it too.
"""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from kubernetes import client

from trimtab.controllers.shell.actuators.base import ActuationError, Actuator, Applied, WorkloadRef
from trimtab.controllers.shell.actuators.kubernetes import error_of
from trimtab.controllers.core.types import Decision

log = logging.getLogger("trimtab.controller.sidecar")

ADMIN_PORT_NAME = "trimtab-admin"
SETTINGS_PATH = "/control/v1/settings"
KNOBS = ("concurrency_limit", "max_batch_size", "batch_timeout_ms", "queue_timeout_s")


class SidecarControlError(Exception):
    """A control call that failed: ``code`` is ``http_<status>`` or ``unreachable``."""

    def __init__(self, code: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status       # the HTTP status the sidecar answered, None if it did not


@dataclass(frozen=True)
class SidecarControlClient:
    """One sidecar's control API: ``GET``/``PUT`` of ``/control/v1/settings``, bearer token.

    A ``PUT`` is a partial change: the sidecar validates it and keeps every other knob.
    """

    base_url: str             # e.g. http://10.0.0.7:9400
    token: str
    timeout_s: float = 2.0

    def settings(self) -> dict[str, object]:
        """The knobs trimtab steers, as the sidecar holds them now."""
        body = self._call("GET")
        return {k: v for k, v in body.items() if k in KNOBS}

    def update(self, changes: Mapping[str, object]) -> None:
        """Change the knobs in ``changes``, leave the others."""
        self._call("PUT", dict(changes))

    def _call(self, method: str, body: dict | None = None) -> dict:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url.rstrip("/") + SETTINGS_PATH, data=data,
                                     method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.load(resp) if method == "GET" else {}
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace")
            raise SidecarControlError(f"http_{exc.code}", detail, exc.code) from exc
        except (OSError, ValueError) as exc:
            raise SidecarControlError("unreachable", str(exc)) from exc


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
        sidecar = SidecarControlClient(
            f"http://{pod.status.pod_ip}:{_admin_port(pod, endpoint.admin_port)}", token,
            endpoint.timeout_s)
        try:
            # The sidecar keeps all knobs at once: read them, change only what we steer.
            sidecar.update({**sidecar.settings(), **settings})
        except SidecarControlError as exc:
            if exc.status is not None:
                log.warning("pod %s: sidecar answered %s: %s", name, exc.status, exc.detail)
            else:
                log.warning("pod %s: sidecar unreachable: %s", name, exc.detail)
            return name, exc.code
        self.confirmed[pod.metadata.uid] = dict(settings)
        return name, ""
