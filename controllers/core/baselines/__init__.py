"""The autoscalers people use today (HPA, KEDA, Knative KPA, Ray Serve), registered by name,
and those of LLM fleets (``keda-vllm``: KServe's KEDA recipe on vLLM's waiting requests;
``aibrix-kpa``, ``aibrix-apa``: AIBrix's PodAutoscaler on KV-cache usage; ``wva``: llm-d's
workload variant autoscaler in saturation mode), registered as LLM-only.

Each baseline runs at its real system's own period, whatever the scenario's controller
interval: HPA and KEDA every 15 s, KPA every 2 s, Ray Serve every 1 s (see ray_serve.py),
AIBrix every 10 s, WVA every 60 s.
"""
from __future__ import annotations

from typing import Any, Callable

from trimtab.controllers.core.baselines import aibrix, hpa, keda, kpa, ray_serve, wva
from trimtab.controllers.core.binding import BoundPolicy, PolicyConfig, build_config
from trimtab.controllers.core.registry import register
from trimtab.controllers.core.types import FleetBounds, Policy


def _factory(name: str, config_cls: type[PolicyConfig], module: Any, interval_s: float,
             derived: Callable[[dict[str, Any], FleetBounds], dict[str, Any]] | None = None):
    def make(params: dict[str, Any], bounds: FleetBounds, _interval_s: float) -> Policy:
        defaults = derived(params, bounds) if derived else {}
        config = build_config(config_cls, params, name, bounds, **defaults)
        return BoundPolicy(name=name, config=config, decide_fn=module.decide,
                           initial_state_fn=module.initial_state, interval_s=interval_s,
                           params=dict(params))
    return make


def _hpa_defaults(params: dict[str, Any], bounds: FleetBounds) -> dict[str, Any]:
    metric = params.get("metric", "in_flight")
    return {"target": hpa.DEFAULT_TARGETS.get(metric, 8.0)}


def _kpa_defaults(params: dict[str, Any], bounds: FleetBounds) -> dict[str, Any]:
    return {"container_concurrency": bounds.concurrency_limit or 0}


register("hpa", _factory("hpa", hpa.HpaConfig, hpa, hpa.SYNC_PERIOD_S, _hpa_defaults))
register("keda", _factory("keda", keda.KedaConfig, keda, keda.INTERVAL_S))
register("kpa", _factory("kpa", kpa.KpaConfig, kpa, kpa.TICK_S, _kpa_defaults))
register("ray", _factory("ray", ray_serve.RayConfig, ray_serve, ray_serve.TICK_S))
register("keda-vllm", _factory("keda-vllm", keda.KedaConfig, keda, keda.INTERVAL_S,
                               lambda params, bounds: dict(keda.VLLM_PRESET)), llm_only=True)
for _strategy in ("kpa", "apa"):
    register(f"aibrix-{_strategy}",
             _factory(f"aibrix-{_strategy}", aibrix.AibrixConfig, aibrix, aibrix.TICK_S,
                      lambda params, bounds, s=_strategy: {"strategy": s}), llm_only=True)
register("wva", _factory("wva", wva.WvaConfig, wva, wva.INTERVAL_S), llm_only=True)
