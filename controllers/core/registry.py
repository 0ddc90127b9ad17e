"""Build a policy from its spec; one table of every policy name the CLI and configs accept."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from trimtab.controllers.core.defaults import INTERVAL_S
from trimtab.controllers.core.spec import PolicySpec, SpecError, parse_spec
from trimtab.controllers.core.types import FleetBounds, Policy

# name -> factory(params, bounds, interval_s) -> Policy. Factories import lazily so that a
# CLI start does not pay for statsmodels unless the trimtab policy is used.
Factory = Callable[[dict[str, Any], FleetBounds, float], Policy]


@dataclass(frozen=True)
class ReplayContext:
    """What a replay gives the policies that plan from the whole run (the oracle, the past-only
    schedule): the scenario, the trace and ``run(policy, record_requests=False)``, which replays
    the same scenario and trace under another policy and returns its result. Opaque to the core:
    the simulator fills it, so the core never imports the simulator."""

    scenario: Any
    trace: Any
    run: Callable[..., Any]


# name -> factory(params, bounds, interval_s, context) -> Policy: policies that exist only in
# a replay, because they need the scenario and the trace (registered by trimtab.sim).
ReplayFactory = Callable[[dict[str, Any], FleetBounds, float, ReplayContext], Policy]


def _static(params: dict[str, Any], bounds: FleetBounds, interval_s: float) -> Policy:
    from trimtab.controllers.core.static import StaticPolicy

    unknown = set(params) - {"replicas"}
    if unknown:
        raise SpecError(f"static: unknown parameter(s) {sorted(unknown)}; known: ['replicas']")
    return StaticPolicy(replicas=int(params.get("replicas", bounds.initial_replicas)),
                        bounds=bounds, interval_s=interval_s)


POLICIES: dict[str, Factory] = {
    "static": _static,
}
REPLAY_POLICIES: dict[str, ReplayFactory] = {}
# Names that steer only an LLM engine's fleet (``service: {model: llm}``): they read the
# Snapshot's FieldGroup.LLM fields, which a request-level fleet leaves empty.
LLM_ONLY: set[str] = set()


def register(name: str, factory: Factory, llm_only: bool = False) -> None:
    POLICIES[name] = factory
    if llm_only:
        LLM_ONLY.add(name)


def applies(name: str, llm: bool) -> bool:
    """Whether policy ``name`` applies to a fleet of that kind: LLM-only names only to an
    LLM fleet, every other name to both."""
    return llm or name not in LLM_ONLY


def register_replay(name: str, factory: ReplayFactory) -> None:
    """A policy built from a ReplayContext (``make_policy(..., context=...)``), replay only."""
    REPLAY_POLICIES[name] = factory


def known_policies() -> list[str]:
    """Every registered name, live and replay-only."""
    return sorted({*POLICIES, *REPLAY_POLICIES})


def make_policy(spec: str | PolicySpec, bounds: FleetBounds, interval_s: float = INTERVAL_S,
                context: ReplayContext | None = None) -> Policy:
    """``make_policy("static:replicas=8", bounds)``; unknown names list the known ones.

    A replay-only name (``oracle``, ``causal``) needs ``context``; without one (a live
    controller) it is refused with the reason.
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    load_builtin_policies()
    factory = POLICIES.get(parsed.name)
    if factory is not None:
        return factory(dict(parsed.params), bounds, interval_s)
    replay = REPLAY_POLICIES.get(parsed.name)
    if replay is None:
        raise SpecError(f"unknown policy {parsed.name!r}; known: {known_policies()}")
    if context is None:
        raise SpecError(f"policy {parsed.name!r} plans from the whole trace: it runs only in a "
                        "replay (trimtab replay), not in a live controller")
    return replay(dict(parsed.params), bounds, interval_s, context)


def load_builtin_policies() -> None:
    """Import the modules that register the live policies (baselines, trimtab); the replay-only
    ones (oracle, causal) are registered by trimtab.sim when the simulator is imported."""
    import importlib

    for module in ("trimtab.controllers.core.baselines", "trimtab.controllers.core.policy"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
