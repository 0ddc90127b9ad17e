"""Build a policy from its spec; one table of every policy name the CLI and configs accept."""
from __future__ import annotations

from typing import Any, Callable

from trimtab.controllers.core.spec import PolicySpec, SpecError, parse_spec
from trimtab.controllers.core.types import FleetBounds, Policy

# name -> factory(params, bounds, interval_s) -> Policy. Factories import lazily so that a
# CLI start does not pay for statsmodels unless the trimtab policy is used.
Factory = Callable[[dict[str, Any], FleetBounds, float], Policy]


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


def register(name: str, factory: Factory) -> None:
    POLICIES[name] = factory


def make_policy(spec: str | PolicySpec, bounds: FleetBounds, interval_s: float = 15.0) -> Policy:
    """``make_policy("static:replicas=8", bounds)``; unknown names list the known ones."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    load_builtin_policies()
    factory = POLICIES.get(parsed.name)
    if factory is None:
        raise SpecError(f"unknown policy {parsed.name!r}; known: {sorted(POLICIES)}")
    return factory(dict(parsed.params), bounds, interval_s)


def load_builtin_policies() -> None:
    """Import the modules that register the other policies (baselines, trimtab, oracle)."""
    import importlib

    for module in ("trimtab.controllers.core.baselines", "trimtab.controllers.core.policy"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
