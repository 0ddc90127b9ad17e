"""Build a ControlLoop (targets, source, actuators, leader elector) from a validated ControllerConfig."""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from trimtab.controllers.shell.actuators.base import Actuator, WorkloadRef
from trimtab.controllers.shell.clock import Clock
from trimtab.controllers.shell.config import ConfigError, ControllerConfig, TargetConfig
from trimtab.controllers.shell.leader import LeaderElector
from trimtab.controllers.shell.loop import DEFAULT_WARMUP_S, ControlLoop, Target
from trimtab.controllers.shell.metrics import ControllerMetrics
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.shell.sources.base import Source, TargetSelector
from trimtab.controllers.core.spec import SpecError

log = logging.getLogger("trimtab.controller")


@dataclass
class Assembly:
    loop: ControlLoop
    elector: LeaderElector | None


def build_targets(cfg: ControllerConfig) -> list[Target]:
    targets = []
    for i, tc in enumerate(cfg.targets):
        targets.append(build_target(tc, cfg.interval_s, f"targets.{i}"))
    return targets


def build_target(tc: TargetConfig, interval_s: float, where: str) -> Target:
    bounds = tc.bounds()
    try:
        policy = make_policy(tc.policy, bounds, interval_s)
        shadows = tuple(make_policy(s, bounds, interval_s) for s in tc.shadow_policies)
    except (SpecError, ValueError) as exc:
        raise ConfigError(f"{where}.policy = {tc.policy!r}: {exc}") from None
    return Target(workload=WorkloadRef(tc.workload.kind, tc.workload.namespace, tc.workload.name),
                  selector=TargetSelector(tc.key, tc.effective_matchers()), policy=policy,
                  model=tc.model, shadows=shadows, bounds=bounds,
                  warmup_s=tc.warmup_s if tc.warmup_s is not None else DEFAULT_WARMUP_S)


def build_source(cfg: ControllerConfig) -> Source:
    if cfg.source == "sidecar":
        from trimtab.controllers.shell.sources.sidecar import SidecarSource

        assert cfg.sidecar_source is not None
        return SidecarSource(cfg.sidecar_source.endpoints, cfg.sidecar_source.timeout_s)
    from trimtab.controllers.shell.sources.prometheus import PrometheusSource

    p = cfg.prometheus
    return PrometheusSource(p.url, timeout_s=p.timeout_s, staleness_s=p.staleness_s)


def kube_client(cfg: ControllerConfig, required: bool):
    """The official client from ``kubeconfig`` or in-cluster config; None if neither (dry-run)."""
    from kubernetes.config import ConfigException

    from trimtab.controllers.shell.actuators.kubernetes import make_api_client

    if cfg.kubeconfig and not Path(cfg.kubeconfig).exists():
        raise ConfigError(f"kubeconfig = {cfg.kubeconfig!r}: file does not exist")
    try:
        return make_api_client(cfg.kubeconfig)
    except ConfigException as exc:
        if required:
            raise ConfigError(f"kubeconfig is not set and not running in a cluster: {exc}")
        return None


def build_actuators(cfg: ControllerConfig, api) -> list[Actuator]:
    if api is None:
        return []
    from trimtab.controllers.shell.actuators.kubernetes import KubernetesActuator
    from trimtab.controllers.shell.actuators.sidecar import SidecarActuator, SidecarEndpoint

    actuators: list[Actuator] = [KubernetesActuator(api, pause_annotation=cfg.pause_annotation)]
    endpoints = {t.key: SidecarEndpoint(t.sidecar.token_file, t.sidecar.admin_port,
                                        t.sidecar.timeout_s)
                 for t in cfg.targets if t.pod_knobs == "sidecar" and t.sidecar is not None}
    if endpoints:
        actuators.append(SidecarActuator(api, endpoints))
    return actuators


def assemble(cfg: ControllerConfig, clock: Clock, *, dry_run: bool,
             metrics: ControllerMetrics | None = None) -> Assembly:
    """Everything the CLI runs; a dry run without a cluster reads metrics and applies nothing."""
    targets = build_targets(cfg)
    api = kube_client(cfg, required=not dry_run or cfg.leader_election.enabled)
    elector = None
    if cfg.leader_election.enabled and api is not None:
        le = cfg.leader_election
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{os.getpid()}"
        elector = LeaderElector(api, le.namespace, le.lease_name, identity, clock,
                                lease_duration_s=le.lease_duration_s,
                                renew_every_s=le.renew_every_s)
    loop = ControlLoop(targets, build_source(cfg), build_actuators(cfg, api), clock, metrics,
                       dry_run=dry_run, leader=elector, interval_s=cfg.interval_s,
                       window_s=cfg.prometheus.window_s)
    return Assembly(loop, elector)
