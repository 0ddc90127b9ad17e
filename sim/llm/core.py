"""The compiled LLM fleet engine: ``CompiledFleet``, SPEC.md in numba over struct-of-arrays.

The class holds the state as numpy arrays (``kernels.Reqs``, ``Reps``, ``Glob``, ``Log``) and
calls the njit kernels of ``kernels.py`` for everything inside ``advance`` and the lifecycle
calls; Python only grows the replica tables (doubling, in ``add_replica``) and the step log.
Same API as ``reference.ReferenceFleet``; a test holds the two equal bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

from trimtab.sim.llm import kernels as K
from trimtab.sim.llm.types import ITL_BOUNDS_S, MASK64, LlmRequests, SchedulerConfig, StepModel

_REP_INIT = 4
_LOG_INIT = 4096


def _check_count(name: str, v: int | None, low: int) -> None:
    if v is not None and not (isinstance(v, (int, np.integer)) and v >= low):
        raise ValueError(f"CompiledFleet: {name} = {v!r}, must be None or an integer >= {low}")


def _check_timeout(v: float | None) -> None:
    if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
        raise ValueError(f"CompiledFleet: queue_timeout_s = {v!r}, must be None or a finite "
                         "number >= 0")


class CompiledFleet:
    """A fleet of LLM replicas serving one request stream (see ``sim/llm/SPEC.md``)."""

    def __init__(self, requests: LlmRequests, sched: SchedulerConfig, step: StepModel, *,
                 seed: int = 0, router: str = "least_outstanding", limit: int | None = None,
                 max_queue: int | None = None, queue_timeout_s: float | None = None,
                 record_steps: bool = False) -> None:
        if router not in K.ROUTERS:
            raise ValueError(f"CompiledFleet: router = {router!r}, must be one of "
                             f"{sorted(K.ROUTERS)}")
        _check_count("limit", limit, 0)
        _check_count("max_queue", max_queue, 0)
        _check_timeout(queue_timeout_s)
        self.sched, self.step = sched, step
        self._record = bool(record_steps)
        n = len(requests)
        bs, nb = sched.block_size, sched.num_blocks
        prefix = bool(sched.prefix_caching)
        key_off = requests.key_offsets
        max_keys = int(np.max(np.diff(key_off))) if n else 0
        # One row of block ids per running sequence: at most ceil(tokens / block_size) blocks.
        most_tokens = int(np.max(requests.prompt_tokens + requests.output_tokens)) if n else 1
        self._bcap = min(nb, -(-most_tokens // bs)) if prefix else 0
        hbits = max(1, int(2 * nb - 1).bit_length()) if prefix else 1
        self._hsize = 1 << hbits

        self.outcome = np.zeros(n, np.int8)
        rqi = np.zeros((n, K.N_RQI), np.int32)
        rqi[:, K.C_NXT] = rqi[:, K.C_SLOT] = rqi[:, K.C_REP] = -1
        rqf = np.full((n, K.N_RQF), np.nan)
        # The per-request results are column views of the engine's two tables.
        self.replica_of = rqi[:, K.C_REP]
        self.preemptions = rqi[:, K.C_PRE]
        self.generated = rqi[:, K.C_GEN]
        self.first_scheduled_s = rqf[:, K.T_SCHED]
        self.first_token_s = rqf[:, K.T_TOK]
        self.finish_s = rqf[:, K.T_FIN]
        self._q = K.Reqs(arrival_s=requests.arrival_s, prompt=requests.prompt_tokens,
                         output=requests.output_tokens, key_off=key_off, keys=requests.keys,
                         outcome=self.outcome, rqi=rqi, rqf=rqf, fin=np.zeros(n, np.int32))

        ist = np.zeros(K.N_IST, np.int64)
        ist[K.I_QHEAD] = ist[K.I_QTAIL] = -1
        ist[K.I_MAXSEQ] = sched.max_num_seqs
        ist[K.I_MNBT] = sched.max_num_batched_tokens
        ist[K.I_CHUNK] = int(sched.chunked_prefill)
        ist[K.I_BS] = bs
        ist[K.I_NB] = nb
        ist[K.I_PREFIX] = int(prefix)
        ist[K.I_ROUTER] = K.ROUTERS[router]
        ist[K.I_MAXQ] = -1 if max_queue is None else int(max_queue)
        ist[K.I_LIMIT] = K.NO_LIMIT if limit is None else int(limit)
        ist[K.I_REC] = int(self._record)
        ist[K.I_HMASK] = self._hsize - 1
        ist[K.I_HSHIFT] = 64 - hbits
        ist[K.I_SEED] = np.array([int(seed) & MASK64], np.uint64).view(np.int64)[0]
        fst = np.zeros(K.N_FST)
        fst[K.F_LAST_GAP] = np.nan
        fst[K.F_C0], fst[K.F_CP], fst[K.F_CD] = step.c0_ms, step.c_prefill_ms, step.c_decode_ms
        fst[K.F_CKV], fst[K.F_CA], fst[K.F_CV] = step.c_kv_ms, step.c_attn_ms, step.cv
        s2 = math.log1p(step.cv * step.cv)        # noise_factor's constants, computed once
        fst[K.F_NS], fst[K.F_NHALF] = math.sqrt(s2), s2 / 2.0
        self.itl_counts = np.zeros(len(ITL_BOUNDS_S) + 1, np.int64)
        self._g = K.Glob(ist=ist, fst=fst, itl_counts=self.itl_counts,
                         bounds=np.array(ITL_BOUNDS_S),
                         scratch=np.zeros(max(max_keys, 1), np.int32))
        self._fin_read = 0
        if queue_timeout_s is not None:
            ist[K.I_HAS_TO], fst[K.F_TIMEOUT] = 1, float(queue_timeout_s)
        self._p = self._new_reps(_REP_INIT)
        self._log = self._new_log(_LOG_INIT if self._record else 1)
        ist[K.I_LOGCAP] = len(self._log.logi)

    # ----------------------------------------------------------------- tables
    def _new_reps(self, cap: int) -> K.Reps:
        s, nb = self.sched.max_num_seqs, self.sched.num_blocks
        prefix = self._bcap > 0
        pb = nb if prefix else 1
        ph = self._hsize if prefix else 1
        rp = np.zeros((cap, K.N_RP), np.int64)
        rp[:, K.R_STATE] = K.STOPPED
        rp[:, [K.R_WHEAD, K.R_WTAIL, K.R_LRUH, K.R_LRUT]] = -1
        rp[:, K.R_FREE] = nb
        rp[:, K.R_NUNC] = nb if prefix else 0
        rp[:, K.R_NSLOT] = s
        rs = np.zeros((cap, K.N_RS, s), np.int32)
        rs[:, K.S_SLOTS, :] = np.arange(s - 1, -1, -1, dtype=np.int32)
        blk = np.zeros((cap, K.N_BLK, pb), np.int32)
        blk[:, [K.B_PREV, K.B_NEXT], :] = -1
        blk[:, K.B_USTACK, :] = np.arange(pb - 1, -1, -1, dtype=np.int32)
        return K.Reps(rp=rp, heap_r=np.zeros(cap, np.int32), heap_t=np.zeros(cap),
                      hpos=np.full(cap, -1, np.int32), rs=rs, blk=blk,
                      bkey=np.zeros((cap, pb), np.int64), htk=np.zeros((cap, ph), np.int64),
                      htb=np.full((cap, ph), -1, np.int32),
                      btab=np.zeros((cap, s if prefix else 1, max(self._bcap, 1)), np.int32))

    def _grow_reps(self) -> None:
        old = self._p
        cap = len(old.rp)
        new = self._new_reps(2 * cap)
        for a, b in zip(old, new):
            b[:cap] = a
        self._p = new

    @staticmethod
    def _new_log(cap: int) -> K.Log:
        return K.Log(logi=np.zeros((cap, len(K.LOG_INT)), np.int64),
                     logf=np.zeros((cap, len(K.LOG_FLOAT))))

    def _room_in_log(self) -> None:
        """Make room for one handler's steps (at most one per replica, plus one)."""
        ist = self._g.ist
        if not self._record or ist[K.I_LOGCAP] - ist[K.I_LOG] >= ist[K.I_NREP] + 1:
            return
        old, n = self._log, int(ist[K.I_LOG])
        cap = max(2 * len(old.logi), n + 2 * int(ist[K.I_NREP]) + 4)
        new = self._new_log(cap)
        for a, b in zip(old, new):
            b[:n] = a[:n]
        self._log = new
        ist[K.I_LOGCAP] = cap

    # ----------------------------------------------------------------- clock
    @property
    def now_s(self) -> float:
        return float(self._g.fst[K.F_NOW])

    @property
    def arrivals_done(self) -> int:
        return int(self._g.ist[K.I_AI])

    def advance(self, until_s: float) -> None:
        """Process every event with time <= ``until_s``, then ``now_s = until_s``."""
        until_s = float(until_s)
        if not (math.isfinite(until_s) and until_s >= self.now_s):
            raise ValueError(f"CompiledFleet.advance: until_s = {until_s!r}, must be finite "
                             f"and >= now_s = {self.now_s!r}")
        while True:
            self._room_in_log()
            if K.advance(self._q, self._p, self._g, self._log, until_s) == 0:
                return

    # ----------------------------------------------------------------- lifecycle
    def add_replica(self, ready_at_s: float) -> int:
        """A new replica: READY now when ``ready_at_s <= now_s`` (then fed), else STARTING."""
        if not math.isfinite(ready_at_s):
            raise ValueError(f"CompiledFleet.add_replica: ready_at_s = {ready_at_s!r}, must "
                             "be finite")
        r = int(self._g.ist[K.I_NREP])
        if r == len(self._p.rp):
            self._grow_reps()
        self._room_in_log()
        if K.add_replica(self._p, self._g, r, float(ready_at_s)):
            K.feed_now(self._q, self._p, self._g, self._log)
        return r

    def _check_replica(self, r: int) -> None:
        if not (isinstance(r, (int, np.integer)) and 0 <= r < self._g.ist[K.I_NREP]):
            raise ValueError(f"CompiledFleet: replica {r!r} does not exist "
                             f"(ids 0..{int(self._g.ist[K.I_NREP]) - 1})")

    def remove_replica(self, r: int) -> None:
        """STARTING: STOPPED; READY: DRAINING (STOPPED when it holds nothing); else nothing."""
        self._check_replica(r)
        K.remove_replica(self._p, self._g, int(r))

    def set_limit(self, limit: int | None) -> None:
        """Per-replica cap on outstanding requests (None: unbounded), then feed."""
        _check_count("limit", limit, 0)
        self._room_in_log()
        self._g.ist[K.I_LIMIT] = K.NO_LIMIT if limit is None else int(limit)
        K.recount_eligible(self._p.rp, self._g.ist)
        K.feed_now(self._q, self._p, self._g, self._log)

    def set_queue_timeout_s(self, t_s: float | None) -> None:
        """Router-queue timeout (None: never), then purge."""
        _check_timeout(t_s)
        K.set_queue_timeout(self._q, self._g, 0 if t_s is None else 1,
                            0.0 if t_s is None else float(t_s))

    # ----------------------------------------------------------------- results
    def take_finished(self) -> np.ndarray:
        """Ids that reached an outcome since the last call, in the order they did."""
        n = int(self._g.ist[K.I_FIN])
        out = self._q.fin[self._fin_read:n].astype(np.int64)
        self._fin_read = n
        return out

    def totals(self) -> dict[str, float]:
        ist, fst = self._g.ist, self._g.fst
        ints = {"steps": K.I_STEPS, "prompt_tokens": K.I_PROMPT, "output_tokens": K.I_OUTPUT,
                "preemptions": K.I_PREEMPT, "prefix_queries": K.I_PQ, "prefix_hits": K.I_PH,
                "itl_count": K.I_ITLC, "served": K.I_SERVED, "shed": K.I_SHED,
                "timed_out": K.I_TIMEDOUT, "failed": K.I_FAILED, "arrived": K.I_ARRIVED}
        floats = {"itl_sum_s": K.F_ITL_SUM, "area_live": K.F_A_LIVE, "area_ready": K.F_A_READY,
                  "area_busy": K.F_A_BUSY, "area_system": K.F_A_SYSTEM,
                  "area_queue": K.F_A_QUEUE, "area_running": K.F_A_RUNNING,
                  "area_waiting": K.F_A_WAITING, "area_blocks": K.F_A_BLOCKS}
        out = {k: float(ist[i]) for k, i in ints.items()}
        out.update({k: float(fst[i]) for k, i in floats.items()})
        return out

    def replicas(self) -> dict[str, np.ndarray]:
        rp = self._p.rp[:int(self._g.ist[K.I_NREP])]
        return {"state": rp[:, K.R_STATE].astype(np.int8),
                "running": rp[:, K.R_NRUN].copy(), "waiting": rp[:, K.R_NWAIT].copy(),
                "blocks_used": self.sched.num_blocks - rp[:, K.R_FREE],
                "busy": rp[:, K.R_BUSY].astype(np.bool_), "preemptions": rp[:, K.R_PRE].copy(),
                "steps": rp[:, K.R_STEPS].copy()}

    def step_log(self) -> dict[str, np.ndarray]:
        """Per step, in the order steps started (``record_steps=True``)."""
        if not self._record:
            raise ValueError("CompiledFleet.step_log: needs record_steps=True")
        n = int(self._g.ist[K.I_LOG])
        out = {k: self._log.logi[:n, j].copy() for j, k in enumerate(K.LOG_INT)}
        out.update({k: self._log.logf[:n, j].copy() for j, k in enumerate(K.LOG_FLOAT)})
        return out
