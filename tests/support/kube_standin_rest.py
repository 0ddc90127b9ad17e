"""REST semantics for the Kubernetes API STAND-IN: Status error bodies, label selectors, patches."""
from __future__ import annotations

import copy
import re

TS = "2026-01-01T00:00:00Z"
GROUPS = {"deployments": "apps", "statefulsets": "apps", "pods": "", "events": "",
          "leases": "coordination.k8s.io"}
KINDS = {"deployments": "Deployment", "statefulsets": "StatefulSet", "pods": "Pod",
         "events": "Event", "leases": "Lease"}
API_VERSIONS = {"deployments": "apps/v1", "statefulsets": "apps/v1", "pods": "v1",
                "events": "v1", "leases": "coordination.k8s.io/v1"}
ROUTE = re.compile(
    r"^/(?:api/v1|apis/(?P<group>apps|coordination\.k8s\.io)/v1)/namespaces/(?P<ns>[^/]+)/"
    r"(?P<plural>deployments|statefulsets|pods|events|leases)(?:/(?P<name>[^/]+))?"
    r"(?:/(?P<sub>scale))?/?$")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.details, self.headers = code, reason, details, headers or {}

    def body(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": str(self), "reason": self.reason, "code": self.code}
        if self.details is not None:
            out["details"] = self.details
        return out


def qualified_plural(plural: str) -> str:
    group = GROUPS[plural]
    return f"{plural}.{group}" if group else plural


def status_details(plural: str, name: str) -> dict:
    d = {"name": name, "kind": plural}
    if GROUPS[plural]:
        d["group"] = GROUPS[plural]
    return d


def not_found(plural: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified_plural(plural)} "{name}" not found',
                    status_details(plural, name))


def conflict(plural: str, name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified_plural(plural)} '
                    f'"{name}": the object has been modified; please apply your changes to the '
                    "latest version and try again", status_details(plural, name))


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based and ``in``/``notin``/exists selectors, as in labels.Parse."""
    for part in re.split(r",(?![^()]*\))", selector.strip()) if selector.strip() else []:
        part = part.strip()
        m = re.match(r"^([\w./-]+)\s+(in|notin)\s+\((.*)\)$", part)
        if m:
            values = {v.strip() for v in m.group(3).split(",")}
            inside = labels.get(m.group(1)) in values
            if inside != (m.group(2) == "in"):
                return False
        elif "!=" in part:
            k, v = part.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in part:
            k, v = part.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif part.startswith("!"):
            if part[1:] in labels:
                return False
        elif part not in labels:
            return False
    return True


def merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch (also what strategic merge does for the fields used here)."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge_patch(target[k], v)
        else:
            target[k] = copy.deepcopy(v)
    return target


def apply_json_patch(doc: dict, ops: list) -> dict:
    """RFC 6902 add/replace/remove/test on object paths (enough for /spec/replicas)."""
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent.setdefault(p, {})
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            parent[last] = op["value"]
        elif op["op"] == "remove":
            parent.pop(last, None)
        elif op["op"] == "test" and parent.get(last) != op["value"]:
            raise ApiError(422, "Invalid", f"the server rejected our request: test failed at"
                           f" {op['path']}")
    return doc
