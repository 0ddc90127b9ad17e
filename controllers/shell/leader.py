"""Leader election on a coordination.k8s.io/v1 Lease, as client-go does it: only the leader actuates."""
from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from typing import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trimtab.controllers.shell.clock import Clock, WallClock

log = logging.getLogger("trimtab.controller.leader")


class LeaderElector:
    """Acquire or renew the Lease; ``is_leader(now_s)`` is what the loop asks before actuating.

    Expiry is judged on the local clock, like client-go: a follower notes when it last saw the
    Lease record change and takes over only ``lease_duration_s`` after that, so clock skew
    between pods does not matter. The leader trusts itself only ``renew_deadline_s`` (< lease
    duration) after its last successful renewal. Worked example with 15 s / 13 s: leader renews
    at t=0 (its clock); a follower sees that record at t>=0 and may take over at t>=15; the
    leader, if it cannot renew, stops actuating at t=13. So two leaders never overlap.
    """

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str, identity: str,
                 clock: Clock, *, lease_duration_s: float = 15.0, renew_every_s: float = 10.0,
                 renew_deadline_s: float | None = None, retry_every_s: float = 2.0,
                 unix_time: Callable[[], float] = WallClock.unix_s,
                 on_change: Callable[[bool], None] | None = None) -> None:
        if renew_every_s >= lease_duration_s:
            raise ValueError(f"renew_every_s = {renew_every_s} must be < lease_duration_s ="
                             f" {lease_duration_s}")
        self.coord = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.clock = clock
        self.lease_duration_s = lease_duration_s
        self.renew_every_s = renew_every_s
        # Default 13 s for 15/10: stop trusting itself 2 s (or half the slack) before a
        # follower may take over.
        self.renew_deadline_s = renew_deadline_s if renew_deadline_s is not None else (
            lease_duration_s - min(2.0, (lease_duration_s - renew_every_s) / 2))
        if not renew_every_s <= self.renew_deadline_s < lease_duration_s:
            raise ValueError(f"renew_deadline_s = {self.renew_deadline_s} must be >= renew_every_s"
                             f" = {renew_every_s} and < lease_duration_s = {lease_duration_s}")
        self.retry_every_s = retry_every_s
        self.unix_time = unix_time
        self.on_change = on_change
        self._leader_until_s = -math.inf
        self._observed_rv: str | None = None
        self._observed_at_s = -math.inf
        self._was_leader = False

    def is_leader(self, now_s: float) -> bool:
        return now_s < self._leader_until_s

    def _micro_now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.unix_time(), tz=dt.timezone.utc)

    def _spec(self, transitions: int, acquire: dt.datetime | None) -> client.V1LeaseSpec:
        now = self._micro_now()
        return client.V1LeaseSpec(holder_identity=self.identity,
                                  lease_duration_seconds=int(math.ceil(self.lease_duration_s)),
                                  acquire_time=acquire or now, renew_time=now,
                                  lease_transitions=transitions)

    def step(self, now_s: float) -> bool:
        """One try to acquire or renew; returns whether this process leads after it."""
        try:
            self._try(now_s)
        except ApiException as exc:
            log.warning("lease %s/%s: API %s; leader until deadline only", self.namespace,
                        self.name, exc.status)
        except Exception as exc:   # API server unreachable: keep belief until the deadline
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
        leading = self.is_leader(now_s)
        if leading != self._was_leader:
            log.info("lease %s/%s: %s is %s", self.namespace, self.name, self.identity,
                     "now the leader" if leading else "no longer the leader")
            self._was_leader = leading
            if self.on_change is not None:
                self.on_change(leading)
        return leading

    def _try(self, now_s: float) -> None:
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace,
                                                     _request_timeout=5.0)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name,
                                                               namespace=self.namespace),
                                  spec=self._spec(0, None))
            try:
                created = self.coord.create_namespaced_lease(self.namespace, body,
                                                             _request_timeout=5.0)
            except ApiException as exc2:
                if exc2.status == 409:     # another candidate created it first
                    return
                raise
            self._won(now_s, created.metadata.resource_version)
            return
        spec = lease.spec or client.V1LeaseSpec()
        rv = lease.metadata.resource_version
        if rv != self._observed_rv:
            self._observed_rv, self._observed_at_s = rv, now_s
        holder = spec.holder_identity or ""
        duration_s = float(spec.lease_duration_seconds or self.lease_duration_s)
        if holder and holder != self.identity and now_s < self._observed_at_s + duration_s:
            self._leader_until_s = -math.inf      # someone else holds a live lease
            return
        mine = holder == self.identity
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        lease.spec = self._spec(transitions, spec.acquire_time if mine else None)
        try:
            updated = self.coord.replace_namespaced_lease(self.name, self.namespace, lease,
                                                          _request_timeout=5.0)
        except ApiException as exc:
            if exc.status == 409:          # lost a race; look again next time
                return
            raise
        self._won(now_s, updated.metadata.resource_version)

    def _won(self, now_s: float, rv: str) -> None:
        self._leader_until_s = now_s + self.renew_deadline_s
        self._observed_rv, self._observed_at_s = rv, now_s

    def release(self) -> None:
        """Give the lease up at once (on SIGTERM), so a follower need not wait for expiry."""
        was = self._leader_until_s > -math.inf
        self._leader_until_s = -math.inf
        if not was:
            return
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace,
                                                     _request_timeout=5.0)
            if (lease.spec.holder_identity or "") != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = self._micro_now()
            self.coord.replace_namespaced_lease(self.name, self.namespace, lease,
                                                _request_timeout=5.0)
            log.info("lease %s/%s released by %s", self.namespace, self.name, self.identity)
        except Exception as exc:   # best effort: the lease expires on its own anyway
            log.warning("lease %s/%s: release failed: %s", self.namespace, self.name, exc)

    def run(self, stop: threading.Event) -> None:
        """Renew every ``renew_every_s`` while leading, retry every ``retry_every_s`` otherwise."""
        while not stop.is_set():
            now_s = self.clock.now_s()
            leading = self.step(now_s)
            wait_s = self.renew_every_s if leading else self.retry_every_s
            stop.wait(max(0.0, now_s + wait_s - self.clock.now_s()))
        self.release()
