"""Dynamo's SLA planner in a replay: its profile built from the scenario, as Dynamo's
profiler would measure the engine (the step model and the scheduler's limits), and the
scenario's TTFT and TPOT bounds as its targets. Registers the replay policy ``dynamo``
(LLM-only); the planner itself is ``trimtab.controllers.core.baselines.dynamo``."""
from __future__ import annotations

from typing import Any

from trimtab.controllers.core import registry
from trimtab.controllers.core.baselines import dynamo
from trimtab.controllers.core.binding import BoundPolicy, build_config
from trimtab.controllers.core.spec import SpecError
from trimtab.controllers.core.types import FleetBounds, Policy


def profile_params(sc: Any) -> dict[str, Any]:
    """The planner's parameters this scenario implies: the profile, the limits, the targets
    (the SLO's ``ttft_s`` and ``tpot_s`` when given, else Dynamo's defaults)."""
    if sc.service.model != "llm":
        raise SpecError("dynamo: plans an LLM fleet (service.model llm); this scenario's "
                        f"model is {sc.service.model!r}")
    m = sc.step_model()
    sch = sc.service.scheduler_config()
    out: dict[str, Any] = {
        "profile_c0_ms": m.c0_ms, "profile_c_prefill_ms": m.c_prefill_ms,
        "profile_c_decode_ms": m.c_decode_ms, "profile_c_kv_ms": m.c_kv_ms,
        "profile_c_attn_ms": m.c_attn_ms,
        "max_num_batched_tokens": sch.max_num_batched_tokens,
        "max_num_seqs": sch.max_num_seqs, "max_kv_tokens": sch.num_blocks * sch.block_size,
    }
    if sc.slo.ttft_s is not None:
        out["ttft_ms"] = sc.slo.ttft_s * 1000.0
    if sc.slo.tpot_s is not None:
        out["itl_ms"] = sc.slo.tpot_s * 1000.0
    return out


def make_dynamo_policy(params: dict[str, Any], bounds: FleetBounds, interval_s: float,
                       context: registry.ReplayContext) -> Policy:
    config = build_config(dynamo.DynamoConfig, params, "dynamo", bounds,
                          **profile_params(context.scenario))
    return BoundPolicy(name="dynamo", config=config, decide_fn=dynamo.decide,
                       initial_state_fn=dynamo.initial_state,
                       interval_s=config.interval_s, params=dict(params))


registry.register_replay("dynamo", make_dynamo_policy)
registry.LLM_ONLY.add("dynamo")
