"""Parse policy specs like ``hpa:target=5,metric=in_flight`` into a name and typed params."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class SpecError(ValueError):
    """A policy spec that cannot be parsed; the message names the spec, the part and the rule."""


@dataclass(frozen=True)
class PolicySpec:
    name: str
    params: dict[str, Any]

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.params.items())


def _coerce(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> PolicySpec:
    """``"static:replicas=8"`` -> PolicySpec("static", {"replicas": 8})."""
    name, _, rest = spec.strip().partition(":")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise SpecError(f"policy spec {spec!r}: name {name!r} must be a non-empty word")
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise SpecError(f"policy spec {spec!r}: part {part!r} must look like key=value")
        params[key.strip()] = _coerce(value.strip())
    return PolicySpec(name.lower(), params)
