"""A loopback STAND-IN for the Kubernetes API server (not a real one), for the resources trimtab uses.

It speaks the real REST paths, verbs, content types and Status error bodies for exactly:
apps/v1 deployments and statefulsets (GET, PUT, PATCH) and their ``/scale`` subresource
(GET, PUT, PATCH: json-patch, merge-patch, strategic-merge-patch), core/v1 pods (GET one,
LIST with labelSelector) and events (POST), coordination.k8s.io/v1 leases (GET, POST, PUT).
resourceVersion is one global counter as in etcd; an update naming an old resourceVersion
answers 409 Conflict, a missing object 404 NotFound, a duplicate create 409 AlreadyExists,
with the message texts the real server uses. ``inject(code, count, match)`` makes the next
matching requests fail with 429 (with Retry-After), 500 or 409, for fault-injection tests.
The official ``kubernetes`` client drives it through ``write_kubeconfig()``.
What it does not do: watches, admission, RBAC, garbage collection, real pod lifecycles.
"""
from __future__ import annotations

import copy
import json
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.support.kube_standin_rest import (API_VERSIONS, KINDS, ROUTE, TS, ApiError,
                                           apply_json_patch, conflict, merge_patch, not_found,
                                           qualified_plural, selector_matches, status_details)

__all__ = ["KubeStandIn", "ApiError", "selector_matches"]

@dataclass
class Fault:
    code: int
    count: int
    match: str


class KubeStandIn:
    """The stand-in server: ``start()``, ``add_deployment()``, ``add_pod()``, ``inject()``."""

    def __init__(self, token: str = "standin-token") -> None:
        self.token = token
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.requests: list[tuple[str, str, int]] = []
        self._faults: list[Fault] = []
        self._rv = 100
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, port: int = 0) -> "KubeStandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                standin._serve(self)

            do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="kube-standin")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "KubeStandIn":
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "trimtab", "user": {"token": self.token}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin",
                                                          "user": "trimtab"}}]}))
        return p

    # -- fixtures -----------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _meta(self, ns: str, name: str, labels: dict | None = None,
              annotations: dict | None = None) -> dict:
        return {"name": name, "namespace": ns, "uid": str(uuid.uuid4()),
                "resourceVersion": self._next_rv(), "creationTimestamp": TS, "generation": 1,
                "labels": dict(labels or {}), "annotations": dict(annotations or {})}

    def add_workload(self, ns: str, name: str, replicas: int = 1, kind: str = "Deployment",
                     labels: dict | None = None, annotations: dict | None = None) -> dict:
        plural = "deployments" if kind == "Deployment" else "statefulsets"
        match = dict(labels or {"app": name})
        obj = {"apiVersion": "apps/v1", "kind": kind,
               "metadata": self._meta(ns, name, match, annotations),
               "spec": {"replicas": replicas, "selector": {"matchLabels": match},
                        "template": {"metadata": {"labels": match},
                                     "spec": {"containers": [{"name": "model",
                                                              "image": "model:1"}]}}},
               "status": {"replicas": replicas, "readyReplicas": replicas,
                          "observedGeneration": 1}}
        with self._lock:
            self.objects[(plural, ns, name)] = obj
        return obj

    add_deployment = add_workload

    def add_pod(self, ns: str, name: str, labels: dict, ip: str = "127.0.0.1",
                admin_port: int | None = None, phase: str = "Running", ready: bool = True) -> dict:
        ports = [{"name": "trimtab-admin", "containerPort": admin_port, "protocol": "TCP"}] \
            if admin_port else []
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": self._meta(ns, name, labels),
               "spec": {"containers": [{"name": "model", "image": "model:1"},
                                       {"name": "trimtab-sidecar", "image": "trimtab:1",
                                        "ports": ports}]},
               "status": {"phase": phase, "podIP": ip,
                          "conditions": [{"type": "Ready",
                                          "status": "True" if ready else "False"}]}}
        with self._lock:
            self.objects[("pods", ns, name)] = obj
        return obj

    def remove(self, plural: str, ns: str, name: str) -> None:
        with self._lock:
            self.objects.pop((plural, ns, name), None)

    def get(self, plural: str, ns: str, name: str) -> dict:
        with self._lock:
            return copy.deepcopy(self.objects[(plural, ns, name)])

    def set_annotation(self, plural: str, ns: str, name: str, key: str,
                       value: str | None) -> None:
        with self._lock:
            obj = self.objects[(plural, ns, name)]
            ann = obj["metadata"].setdefault("annotations", {})
            if value is None:
                ann.pop(key, None)
            else:
                ann[key] = value
            obj["metadata"]["resourceVersion"] = self._next_rv()

    def bump(self, plural: str, ns: str, name: str) -> None:
        """Someone else wrote the object: its resourceVersion moves on (a later PUT conflicts)."""
        with self._lock:
            self.objects[(plural, ns, name)]["metadata"]["resourceVersion"] = self._next_rv()

    def inject(self, code: int, count: int = 1, match: str = "") -> None:
        """The next ``count`` requests whose ``"METHOD /path"`` contains ``match`` get ``code``."""
        with self._lock:
            self._faults.append(Fault(code, count, match))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def events(self, ns: str | None = None) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(o) for (p, n, _), o in self.objects.items()
                    if p == "events" and (ns is None or n == ns)]

    def count(self, method: str, fragment: str = "") -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.requests if m == method and fragment in p)

    # -- serving ------------------------------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        code, headers = 500, {}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            if self.token and h.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            self._maybe_fault(h.command, h.path)
            code, body = self._dispatch(h.command, h.path, raw,
                                        h.headers.get("Content-Type", ""))
        except ApiError as exc:
            code, body, headers = exc.code, exc.body(), exc.headers
        except (ValueError, KeyError, TypeError) as exc:
            code, body = 400, ApiError(400, "BadRequest", f"bad request: {exc}").body()
        data = json.dumps(body).encode()
        with self._lock:
            self.requests.append((h.command, h.path, code))
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _maybe_fault(self, method: str, path: str) -> None:
        with self._lock:
            for f in self._faults:
                if f.count > 0 and f.match in f"{method} {path}":
                    f.count -= 1
                    break
            else:
                return
        if f.code == 429:
            raise ApiError(429, "TooManyRequests", "Too many requests, please try again later.",
                           {"retryAfterSeconds": 1}, {"Retry-After": "1"})
        if f.code == 409:
            m = ROUTE.match(urlsplit(path).path)
            plural, name = (m["plural"], m["name"] or "") if m else ("deployments", "")
            raise conflict(plural, name)
        raise ApiError(f.code, "InternalError", "Internal error occurred: injected fault",
                       {"causes": [{"message": "injected fault"}]})

    def _dispatch(self, method: str, path: str, raw: bytes, ctype: str) -> tuple[int, dict]:
        url = urlsplit(path)
        m = ROUTE.match(url.path)
        if not m:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns, plural, name, sub = m["ns"], m["plural"], m["name"], m["sub"]
        if sub and plural not in ("deployments", "statefulsets"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        body = json.loads(raw) if raw else None
        with self._lock:
            if name is None:
                if method == "GET" and plural == "pods":
                    return 200, self._list(ns, plural, parse_qs(url.query))
                if method == "POST" and plural in ("events", "leases"):
                    return 201, self._create(ns, plural, body)
                raise ApiError(405, "MethodNotAllowed",
                               f"the server does not allow this method on the requested resource")
            key = (plural, ns, name)
            if key not in self.objects:
                raise not_found(plural, name)
            obj = self.objects[key]
            if sub == "scale":
                return self._scale(method, plural, obj, body, ctype)
            if method == "GET":
                return 200, copy.deepcopy(obj)
            if method == "PUT" and plural in ("deployments", "statefulsets", "leases"):
                return 200, self._update(plural, obj, body)
            if method == "PATCH" and plural in ("deployments", "statefulsets"):
                new = self._patched(obj, body, ctype)
                return 200, self._update(plural, obj, new, check_rv=False)
            raise ApiError(405, "MethodNotAllowed",
                           "the server does not allow this method on the requested resource")

    def _list(self, ns: str, plural: str, query: dict) -> dict:
        selector = query.get("labelSelector", [""])[0]
        items = [copy.deepcopy(o) for (p, n, _), o in sorted(self.objects.items())
                 if p == plural and n == ns
                 and selector_matches(selector, o["metadata"].get("labels") or {})]
        return {"kind": "PodList", "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._rv)}, "items": items}

    def _create(self, ns: str, plural: str, body: dict) -> dict:
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
        if not name:
            raise ApiError(422, "Invalid", f"{KINDS[plural]} \"\" is invalid: metadata.name:"
                           " Required value: name or generateName is required")
        if (plural, ns, name) in self.objects:
            raise ApiError(409, "AlreadyExists",
                           f'{qualified_plural(plural)} "{name}" already exists',
                           status_details(plural, name))
        meta.update(name=name, namespace=ns, uid=str(uuid.uuid4()),
                    resourceVersion=self._next_rv(), creationTimestamp=TS)
        body.setdefault("apiVersion", API_VERSIONS[plural])
        body.setdefault("kind", KINDS[plural])
        self.objects[(plural, ns, name)] = body
        return copy.deepcopy(body)

    def _update(self, plural: str, obj: dict, body: dict, check_rv: bool = True) -> dict:
        name = obj["metadata"]["name"]
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if check_rv and rv and rv != obj["metadata"]["resourceVersion"]:
            raise conflict(plural, name)
        new = copy.deepcopy(body)
        new["metadata"] = {**obj["metadata"], **(new.get("metadata") or {}),
                           "resourceVersion": self._next_rv(), "uid": obj["metadata"]["uid"]}
        if plural != "leases":
            new.setdefault("status", obj.get("status", {}))
            self._settle(new)
        self.objects[(plural, obj["metadata"]["namespace"], name)] = new
        return copy.deepcopy(new)

    @staticmethod
    def _settle(workload: dict) -> None:
        # Stand-in for the workload controller: replicas become ready at once.
        n = workload["spec"].get("replicas", 1)
        workload["status"].update(replicas=n, readyReplicas=n)

    @staticmethod
    def _patched(obj: dict, body: Any, ctype: str) -> dict:
        base = copy.deepcopy(obj)
        if "json-patch" in ctype:
            return apply_json_patch(base, body)
        if "merge-patch" in ctype:       # merge-patch+json and strategic-merge-patch+json
            return merge_patch(base, body)
        raise ApiError(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format - accepted media types"
                       " include: application/json-patch+json, application/merge-patch+json,"
                       " application/apply-patch+yaml")

    def _scale_view(self, obj: dict) -> dict:
        labels = obj["spec"]["selector"].get("matchLabels", {})
        meta = obj["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                  "creationTimestamp")},
                "spec": {"replicas": obj["spec"]["replicas"]},
                "status": {"replicas": obj["status"].get("replicas", 0),
                           "selector": ",".join(f"{k}={v}" for k, v in labels.items())}}

    def _scale(self, method: str, plural: str, obj: dict, body: Any,
               ctype: str) -> tuple[int, dict]:
        view = self._scale_view(obj)
        if method == "GET":
            return 200, view
        if method == "PUT":
            new = body
        elif method == "PATCH":
            new = self._patched(view, body, ctype)
        else:
            raise ApiError(405, "MethodNotAllowed",
                           "the server does not allow this method on the requested resource")
        name = obj["metadata"]["name"]
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if method == "PUT" and rv and rv != obj["metadata"]["resourceVersion"]:
            raise conflict(plural, name)
        replicas = (new.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas:'
                           f" Invalid value: {replicas!r}: must be greater than or equal to 0",
                           {"name": name, "group": "autoscaling", "kind": "Scale"})
        if replicas != obj["spec"]["replicas"]:
            obj["spec"]["replicas"] = replicas
            obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._settle(obj)
        return 200, self._scale_view(obj)
