"""Bind a pure ``decide(snapshot, config, state, now_s)`` function and its config into a Policy."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from trimtab.common import errors
from trimtab.controllers.core.spec import SpecError
from trimtab.controllers.core.types import Decision, FleetBounds, Snapshot

# Fields every policy config carries that are not user parameters of a spec.
_INTERNAL_FIELDS = frozenset({"bounds"})


class PolicyConfig(BaseModel):
    """Base of every policy's parameters: frozen, unknown keys rejected, bounds attached."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    bounds: FleetBounds = FleetBounds()


def param_names(config_cls: type[PolicyConfig]) -> list[str]:
    """The spec parameters a policy accepts, sorted (what error messages list)."""
    return sorted(n for n in config_cls.model_fields if n not in _INTERNAL_FIELDS)


def build_config(config_cls: type[PolicyConfig], params: Mapping[str, Any], policy: str,
                 bounds: FleetBounds, **defaults: Any) -> PolicyConfig:
    """``params`` from a spec -> a validated config; errors name the parameter, value and rule.

    ``defaults`` are values derived from the bounds that a spec parameter may override.
    """
    known = param_names(config_cls)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise SpecError(f"{policy}: unknown parameter(s) {unknown}; known: {known}")
    merged = {**defaults, **dict(params)}
    try:
        return config_cls(bounds=bounds, **merged)
    except ValidationError as exc:
        raise SpecError(errors.message(exc, policy, top="?", first_only=True)) from None


DecideFn = Callable[[Snapshot, Any, Any, float], "tuple[Decision, Any]"]


@dataclass
class BoundPolicy:
    """A Policy object that only binds a config to module-level pure functions."""

    name: str
    config: PolicyConfig
    decide_fn: DecideFn
    initial_state_fn: Callable[[Any], Any]
    interval_s: float
    params: Mapping[str, Any] = field(default_factory=dict)

    def initial_state(self) -> Any:
        return self.initial_state_fn(self.config)

    def decide(self, snapshot: Snapshot, state: Any, now_s: float) -> tuple[Decision, Any]:
        return self.decide_fn(snapshot, self.config, state, now_s)
