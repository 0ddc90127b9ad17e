"""Routing: least-outstanding buckets (O(1) pick) and round robin, as a mixin of the Fleet.

``bk[c]`` holds the ready replicas with ``c`` outstanding requests and ``minc`` the lowest
non-empty bucket, so a pick pops from ``bk[minc]`` whatever the fleet size. A replica at the
concurrency limit is never picked; when none has room the request waits in the router queue.
"""
from __future__ import annotations

from trimtab.sim.fleet.types import NO_LIMIT


class RouterMixin:
    """Needs the Fleet's ``bk``, ``minc``, ``limit``, ``out``, ``lor``, ``rr_list``, ``rr_pos``."""

    def _bk_add(self, r: int, c: int) -> None:
        bk = self.bk
        while len(bk) <= c + 1:
            bk.append(set())
        bk[c].add(r)
        if c < self.minc:
            self.minc = c

    def _bk_remove(self, r: int, c: int) -> None:
        b = self.bk[c]
        b.discard(r)
        if not b and c == self.minc:
            self._bk_rescan()

    def _bk_rescan(self) -> None:
        for c in range(self.minc if self.minc < NO_LIMIT else 0, len(self.bk)):
            if self.bk[c]:
                self.minc = c
                return
        self.minc = NO_LIMIT

    def _pick(self) -> int:
        """A ready replica with room (and count it as one more outstanding), or -1."""
        if self.lor:
            c = self.minc
            if c >= self.limit:
                return -1
            bk = self.bk
            b = bk[c]
            r = b.pop()
            if len(bk) <= c + 2:
                bk.append(set())
            bk[c + 1].add(r)
            if not b:
                self.minc = c + 1
            self.out[r] = c + 1
            return r
        lst = self.rr_list
        n = len(lst)
        for k in range(n):
            r = lst[(self.rr_pos + k) % n]
            if self.out[r] < self.limit:
                self.rr_pos = (self.rr_pos + k + 1) % n
                self.out[r] += 1
                return r
        return -1

    def _leave_router(self, r: int) -> None:
        if self.lor:
            self._bk_remove(r, self.out[r])
        else:
            self.rr_list.remove(r)
