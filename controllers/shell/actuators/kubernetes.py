"""Kubernetes actuator: replicas through the scale subresource with the official client, one Event per change."""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trimtab.controllers.shell.actuators.base import ActuationError, Actuator, Applied, WorkloadRef
from trimtab.controllers.shell.clock import WallClock
from trimtab.controllers.core.types import Decision

log = logging.getLogger("trimtab.controller.kubernetes")

PAUSE_ANNOTATION = "trimtab.io/paused"
MAX_CONFLICT_RETRIES = 3
TRUE_WORDS = frozenset({"true", "yes", "1", "on"})


def make_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """The official client from a kubeconfig file, or in-cluster config when None.

    urllib3 would sleep on 429/503 Retry-After inside the call, blocking every other target;
    we turn that off and back off in loop time instead. Connection errors still retry twice.
    """
    import urllib3
    from kubernetes import config as kconfig

    cfg = client.Configuration()
    if kubeconfig:
        kconfig.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        kconfig.load_incluster_config(client_configuration=cfg)
    cfg.retries = urllib3.Retry(total=2, read=0, status=0, redirect=0,
                                respect_retry_after_header=False, raise_on_status=False)
    return client.ApiClient(cfg)


def error_of(exc: Exception) -> ActuationError:
    """Map a client exception to a bounded error code; 409, 429, 5xx and I/O are retryable."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        if status == 409:
            return ActuationError("conflict", f"409 Conflict: {exc.reason}")
        if status == 429:
            return ActuationError("throttled", "429 Too Many Requests from the API server")
        if status >= 500:
            return ActuationError("server_error", f"{status} from the API server: {exc.reason}")
        code = {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status, "invalid")
        return ActuationError(code, f"{status} {exc.reason}: {(exc.body or '')[:200]}",
                              retryable=False)
    return ActuationError("unreachable", f"API server unreachable: {type(exc).__name__}: {exc}")


class KubernetesActuator(Actuator):
    """Sets ``spec.replicas`` through ``/scale`` with optimistic concurrency.

    Each apply reads the workload (pause annotation, replicas, resourceVersion) and, when the
    count differs, PUTs the Scale naming that resourceVersion; a 409 means someone wrote in
    between, so it re-reads and tries again (up to 3 times). 429 and 5xx are raised as
    retryable and the loop backs off in loop time, so no sleeping here blocks other targets.
    """

    name = "kubernetes"

    def __init__(self, api_client: client.ApiClient, *, pause_annotation: str = PAUSE_ANNOTATION,
                 timeout_s: float = 5.0, component: str = "trimtab-controller",
                 instance: str = "trimtab", unix_time: Callable[[], float] = WallClock.unix_s,
                 events: bool = True) -> None:
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.pause_annotation = pause_annotation
        self.timeout_s = timeout_s
        self.component = component
        self.instance = instance
        self.unix_time = unix_time
        self.events = events

    # -- reads --------------------------------------------------------------------------------
    def _read(self, w: WorkloadRef) -> Any:
        fn = (self.apps.read_namespaced_deployment if w.kind == "Deployment"
              else self.apps.read_namespaced_stateful_set)
        try:
            return fn(w.name, w.namespace, _request_timeout=self.timeout_s)
        except Exception as exc:
            raise error_of(exc) from exc

    def paused(self, obj: Any) -> bool:
        ann = obj.metadata.annotations or {}
        return str(ann.get(self.pause_annotation, "")).strip().lower() in TRUE_WORDS

    def current_replicas(self, workload: WorkloadRef) -> int | None:
        fn = (self.apps.read_namespaced_deployment_scale if workload.kind == "Deployment"
              else self.apps.read_namespaced_stateful_set_scale)
        try:
            scale = fn(workload.name, workload.namespace, _request_timeout=self.timeout_s)
        except Exception as exc:
            raise error_of(exc) from exc
        return scale.spec.replicas if scale.spec is not None else None

    # -- writes -------------------------------------------------------------------------------
    def apply(self, workload: WorkloadRef, decision: Decision, reason: str) -> Applied:
        if not decision.valid:
            return Applied()
        replace = (self.apps.replace_namespaced_deployment_scale if workload.kind == "Deployment"
                   else self.apps.replace_namespaced_stateful_set_scale)
        for _attempt in range(MAX_CONFLICT_RETRIES):
            obj = self._read(workload)
            if self.paused(obj):
                return Applied(note="paused")
            old = obj.spec.replicas
            if old == decision.replicas:
                return Applied()
            body = client.V1Scale(
                api_version="autoscaling/v1", kind="Scale",
                metadata=client.V1ObjectMeta(name=workload.name, namespace=workload.namespace,
                                             resource_version=obj.metadata.resource_version),
                spec=client.V1ScaleSpec(replicas=decision.replicas))
            try:
                replace(workload.name, workload.namespace, body, _request_timeout=self.timeout_s)
            except ApiException as exc:
                if exc.status == 409:
                    log.info("%s: 409 conflict on scale, re-reading", workload.key)
                    continue
                raise error_of(exc) from exc
            except Exception as exc:
                raise error_of(exc) from exc
            self._event(workload, obj, old, decision.replicas, reason)
            return Applied(changes={"replicas": (old, decision.replicas)})
        raise ActuationError("conflict", f"{workload.key}: {MAX_CONFLICT_RETRIES} conflicts in a"
                             " row on the scale subresource")

    def _event(self, w: WorkloadRef, obj: Any, old: int, new: int, reason: str) -> None:
        if not self.events:
            return
        when = dt.datetime.fromtimestamp(self.unix_time(), tz=dt.timezone.utc)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{w.name}.", namespace=w.namespace),
            involved_object=client.V1ObjectReference(
                api_version="apps/v1", kind=w.kind, name=w.name, namespace=w.namespace,
                uid=obj.metadata.uid, resource_version=obj.metadata.resource_version),
            reason="TrimtabScaled", type="Normal", count=1,
            message=f"Scaled {w.kind.lower()} {w.name} from {old} to {new} replicas: {reason}",
            source=client.V1EventSource(component=self.component),
            reporting_component=self.component, reporting_instance=self.instance,
            first_timestamp=when, last_timestamp=when, event_time=when, action="Scale")
        try:
            self.core.create_namespaced_event(w.namespace, event, _request_timeout=self.timeout_s)
        except Exception as exc:   # the change landed; a lost event is logged, never fatal
            log.warning("%s: could not create event: %s", w.key, error_of(exc))
