"""Ray Serve actuator: set a deployment's replicas, concurrency cap and batch settings in place.

It changes the application's declarative config the way ``serve deploy`` and KubeRay's
RayService do (read every config-deployed application, change one deployment's overrides,
apply the whole config again), so Ray Serve treats ``num_replicas``, ``max_ongoing_requests``
and ``user_config`` as lightweight updates: replicas are added or removed, and running ones
are reconfigured, never restarted. The batch settings travel in ``user_config["trimtab"]``,
which the deployment applies with ``trimtab.collectors.ray_batching.TrimtabBatching``.

Needs the ``trimtab[ray]`` extra; without it every call raises ActuationError
``ray_not_installed`` with the install command, and importing this module still works.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Mapping

from trimtab.collectors.names import (RAY_BATCH_WAIT_TIMEOUT_KEY, RAY_MAX_BATCH_SIZE_KEY,
                                      RAY_USER_CONFIG_KEY)
from trimtab.controllers.shell.actuators.base import ActuationError, Actuator, Applied, WorkloadRef
from trimtab.controllers.core.types import Decision

log = logging.getLogger(__name__)

KIND = "RayServeDeployment"
INSTALL_HINT = ("the Ray Serve actuator needs Ray Serve: pip install 'trimtab[ray]'"
                " (or pip install 'ray[serve]>=2.30,<3')")

# Bounded error codes (metric label values), as the Kubernetes actuator's.
ERR_RAY_MISSING = "ray_not_installed"
ERR_NOT_FOUND = "not_found"
ERR_INVALID = "invalid"
ERR_CONFLICT = "conflict"          # autoscaling on, or an application not deployed by config
ERR_UNAVAILABLE = "unavailable"    # no Serve controller to talk to (retry)
ERR_TIMEOUT = "timeout"
ERR_OTHER = "error"
ERROR_CODES = frozenset({ERR_RAY_MISSING, ERR_NOT_FOUND, ERR_INVALID, ERR_CONFLICT,
                         ERR_UNAVAILABLE, ERR_TIMEOUT, ERR_OTHER})


def ray_serve_available() -> bool:
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        return False
    return True


def _default_client() -> Any:
    """The Serve controller client of the Ray cluster this process is connected to."""
    try:
        from ray.serve.context import _get_global_client
    except ImportError as exc:
        raise ActuationError(ERR_RAY_MISSING, INSTALL_HINT, retryable=False) from exc
    try:
        return _get_global_client()
    except Exception as exc:  # RayServeException: Serve not running, Ray not initialised
        raise ActuationError(ERR_UNAVAILABLE, f"no Ray Serve controller: {exc}") from exc


def desired_overrides(decision: Decision, current: Mapping[str, Any]) -> dict[str, Any]:
    """The deployment overrides ``decision`` asks for, starting from the ``current`` ones.

    Pure: ``current`` is the deployment's entry in the application config. ``None`` fields of
    the decision leave the setting alone. The concurrency cap is raised to the batch size if
    it is below it (a replica holding fewer requests than a batch could never fill one).
    """
    if decision.replicas < 0:
        raise ActuationError(ERR_INVALID, f"replicas = {decision.replicas}, must be >= 0",
                             retryable=False)
    out = copy.deepcopy(dict(current))
    out["num_replicas"] = int(decision.replicas)
    if decision.concurrency_limit is not None:
        if decision.concurrency_limit < 1:
            raise ActuationError(ERR_INVALID, f"concurrency_limit = {decision.concurrency_limit},"
                                 " must be >= 1", retryable=False)
        out["max_ongoing_requests"] = int(decision.concurrency_limit)
    section = dict((out.get("user_config") or {}).get(RAY_USER_CONFIG_KEY) or {})
    if decision.max_batch_size is not None:
        if decision.max_batch_size < 1:
            raise ActuationError(ERR_INVALID, f"max_batch_size = {decision.max_batch_size},"
                                 " must be >= 1", retryable=False)
        section[RAY_MAX_BATCH_SIZE_KEY] = int(decision.max_batch_size)
    if decision.batch_timeout_ms is not None:
        if not decision.batch_timeout_ms >= 0:
            raise ActuationError(ERR_INVALID, f"batch_timeout_ms = {decision.batch_timeout_ms},"
                                 " must be >= 0", retryable=False)
        section[RAY_BATCH_WAIT_TIMEOUT_KEY] = round(decision.batch_timeout_ms / 1000.0, 6)
    if section:
        user_config = dict(out.get("user_config") or {})
        user_config[RAY_USER_CONFIG_KEY] = section
        out["user_config"] = user_config
    batch = section.get(RAY_MAX_BATCH_SIZE_KEY)
    cap = out.get("max_ongoing_requests")
    if batch is not None and cap is not None and cap < batch:
        out["max_ongoing_requests"] = batch
    return out


def steered_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings trimtab steers, from a deployment's overrides or Ray's ``deployment_config``
    (both have ``num_replicas``, ``max_ongoing_requests`` and ``user_config``); None if unset."""
    section = (config.get("user_config") or {}).get(RAY_USER_CONFIG_KEY) or {}
    return {"replicas": config.get("num_replicas"),
            "concurrency_limit": config.get("max_ongoing_requests"),
            "max_batch_size": section.get(RAY_MAX_BATCH_SIZE_KEY),
            "batch_wait_timeout_s": section.get(RAY_BATCH_WAIT_TIMEOUT_KEY)}


def diff_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple]:
    """field -> (old, new) for the settings trimtab steers that differ."""
    a, b = steered_settings(old), steered_settings(new)
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


# Replica states in Ray's deployment details. UPDATING is a running replica being
# reconfigured (a user_config change): it keeps serving.
SERVING_STATES = frozenset({"RUNNING", "UPDATING"})
STARTING_STATES = frozenset({"STARTING", "RECOVERING", "PENDING_MIGRATION"})


def replica_state(replica: Mapping[str, Any]) -> str:
    """A replica's state name (Ray's details hold an enum in-process, a string over REST)."""
    state = replica.get("state")
    return str(getattr(state, "value", state))


def replica_counts(details: Mapping[str, Any]) -> tuple[int, int]:
    """(serving, starting) replicas of one deployment, from Ray's deployment details."""
    states = [replica_state(r) for r in details.get("replicas") or []]
    return (sum(s in SERVING_STATES for s in states),
            sum(s in STARTING_STATES for s in states))


def serving_replicas(details: Mapping[str, Any]) -> dict[str, str]:
    """replica id -> Ray actor id of the serving replicas (a restart changes both)."""
    return {r["replica_id"]: r["actor_id"] for r in details.get("replicas") or []
            if replica_state(r) in SERVING_STATES}


class RayServeActuator(Actuator):
    """Applies Decisions to Ray Serve deployments (WorkloadRef namespace = application name)."""

    name = "ray_serve"

    def __init__(self, client_factory: Callable[[], Any] | None = None) -> None:
        self._client_factory = client_factory or _default_client

    # -- reading ---------------------------------------------------------------------------
    def _details(self) -> dict:
        client = self._client_factory()
        try:
            return client.get_serve_details()
        except ActuationError:
            raise
        except Exception as exc:
            raise _classify(exc, "reading Serve details") from exc

    def deployment_details(self, workload: WorkloadRef) -> dict:
        """Ray's own view of one deployment (status, config, replicas with actor ids)."""
        _check_kind(workload)
        apps = self._details().get("applications") or {}
        app = apps.get(workload.namespace)
        if app is None:
            raise ActuationError(ERR_NOT_FOUND, f"Ray Serve application {workload.namespace!r}"
                                 f" not found; running: {sorted(apps)}", retryable=False)
        dep = (app.get("deployments") or {}).get(workload.name)
        if dep is None:
            raise ActuationError(ERR_NOT_FOUND, f"deployment {workload.name!r} not found in"
                                 f" application {workload.namespace!r}; it has"
                                 f" {sorted(app.get('deployments') or {})}", retryable=False)
        return dep

    def current_replicas(self, workload: WorkloadRef) -> int | None:
        try:
            dep = self.deployment_details(workload)
        except ActuationError:
            return None
        target = dep.get("target_num_replicas")
        if target is None:
            target = (dep.get("deployment_config") or {}).get("num_replicas")
        return None if target is None else int(target)

    def running_replicas(self, workload: WorkloadRef) -> dict[str, str]:
        """replica id -> Ray actor id of the serving replicas (RUNNING or UPDATING)."""
        return serving_replicas(self.deployment_details(workload))

    # -- writing ---------------------------------------------------------------------------
    def apply(self, workload: WorkloadRef, decision: Decision, reason: str) -> Applied:
        _check_kind(workload)
        if not decision.valid:
            return Applied(note="decision not valid: nothing applied")
        details = self._details()
        config = _deploy_config(details, workload)
        app_cfg = next(a for a in config["applications"] if a["name"] == workload.namespace)
        deployments = app_cfg.setdefault("deployments", [])
        entry = next((d for d in deployments if d.get("name") == workload.name), None)
        live = details["applications"][workload.namespace]["deployments"][workload.name]
        live_cfg = live.get("deployment_config") or {}
        if live_cfg.get("autoscaling_config"):
            raise ActuationError(ERR_CONFLICT, f"{workload.key}: Ray Serve autoscaling is on"
                                 " (autoscaling_config set); remove it so trimtab can set"
                                 " num_replicas", retryable=False)
        current = {"name": workload.name, **{k: live_cfg.get(k) for k in
                   ("num_replicas", "max_ongoing_requests", "user_config")}, **(entry or {})}
        wanted = desired_overrides(decision, current)
        changes = diff_settings(current, wanted)
        if not changes:
            return Applied(note="already as decided")
        if entry is None:
            deployments.append(wanted)
        else:
            entry.clear()
            entry.update(wanted)
        self._deploy(config)
        log.info("ray_serve %s: %s (reason %s)", workload.key, changes, reason)
        return Applied(changes=changes, note=reason)

    def _deploy(self, config: dict) -> None:
        try:
            from ray.serve.schema import ServeDeploySchema
        except ImportError as exc:
            raise ActuationError(ERR_RAY_MISSING, INSTALL_HINT, retryable=False) from exc
        try:
            schema = ServeDeploySchema.model_validate(config)
        except Exception as exc:  # pydantic ValidationError: our config is wrong
            raise ActuationError(ERR_INVALID, f"Serve config rejected: {exc}",
                                 retryable=False) from exc
        client = self._client_factory()
        try:
            client.deploy_apps(schema, _blocking=False)
        except Exception as exc:
            raise _classify(exc, "applying the Serve config") from exc


def _check_kind(workload: WorkloadRef) -> None:
    if workload.kind != KIND:
        raise ActuationError(ERR_INVALID, f"workload {workload.key} has kind"
                             f" {workload.kind!r}; the Ray Serve actuator handles {KIND!r}",
                             retryable=False)


def _deploy_config(details: Mapping[str, Any], workload: WorkloadRef) -> dict:
    """The whole declarative config now in force, so re-applying it changes nothing else."""
    apps = details.get("applications") or {}
    if workload.namespace not in apps:
        raise ActuationError(ERR_NOT_FOUND, f"Ray Serve application {workload.namespace!r} not"
                             f" found; running: {sorted(apps)}", retryable=False)
    if workload.name not in (apps[workload.namespace].get("deployments") or {}):
        raise ActuationError(ERR_NOT_FOUND, f"deployment {workload.name!r} not found in"
                             f" application {workload.namespace!r}", retryable=False)
    configs = []
    for name, app in apps.items():
        cfg = app.get("deployed_app_config")
        if cfg is None:
            raise ActuationError(ERR_CONFLICT, f"application {name!r} was deployed with"
                                 " serve.run, not from a config; trimtab changes apps deployed"
                                 " with `serve deploy` or a RayService (config with"
                                 " import_path)", retryable=False)
        configs.append(copy.deepcopy(dict(cfg)))
    out: dict[str, Any] = {"applications": configs}
    for key in ("proxy_location", "http_options", "grpc_options", "target_capacity"):
        if details.get(key) is not None:
            out[key] = copy.deepcopy(details[key])
    return out


def _classify(exc: Exception, doing: str) -> ActuationError:
    """A Ray exception -> a bounded ActuationError code (timeouts and lost actors retry)."""
    kind = type(exc).__name__
    if "Timeout" in kind:
        return ActuationError(ERR_TIMEOUT, f"{doing}: {kind}: {exc}")
    if kind in ("RayActorError", "ActorDiedError", "ActorUnavailableError", "RaySystemError",
                "RayServeException", "ConnectionError"):
        return ActuationError(ERR_UNAVAILABLE, f"{doing}: {kind}: {exc}")
    if "ValidationError" in kind or "ValueError" in str(exc)[:200]:
        return ActuationError(ERR_INVALID, f"{doing}: {kind}: {exc}", retryable=False)
    return ActuationError(ERR_OTHER, f"{doing}: {kind}: {exc}")
