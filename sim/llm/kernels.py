"""The numba kernels of the compiled LLM fleet engine (``core.py``), over struct-of-arrays state.

Everything follows ``sim/llm/SPEC.md`` rule by rule. The state is a few 2-D numpy tables in
four named tuples (``Reqs``: per request, ``Reps``: per replica, ``Glob``: scalars, counters,
histogram; ``Log``: the step log), built and grown by ``core.py`` between calls. Few, wide
tables rather than one array per field: a numba call passes every array of its arguments
(pointers, shape, strides), so the kernels' cost per call grows with the number of arrays.

Data structures:
- replica events: an indexed binary min-heap keyed (time, replica id), ids and times side by
  side by heap position (``heap_r``, ``heap_t``; ``hpos[r]``: where ``r`` is); the replica
  being handled stays in the heap while it is handled and is re-keyed in place when it starts
  its next step (one sift instead of a pop and a push);
- arrivals: a pointer into the sorted arrival array;
- the router queue and every replica's waiting deque: singly linked lists through the request
  column ``C_NXT`` (a request is in at most one; a preempted request is pushed at the front);
- running: ``rs[r, S_RUN, :n_run]`` in admission order; the step in progress: ``S_SQ``/``S_SNEW``;
- kicks: a handler lists the replicas it gives work to (column ``R_KQ``) and ``_settle`` kicks
  them in that order, feeding again while a round of kicks FAILED a request (SPEC step 3);
- prefix caching: per replica a linear-probing hash table key -> block (backward-shift
  deletion), per block a reference count, a keyed flag, links of the LRU list of free cached
  blocks and a stack of free uncached blocks; per running request its block ids
  (``btab[r, slot, :]``, a slot per running sequence).
No kernel allocates, so they run without NRT reference counting (``_nrt=False``).
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

# Outcomes and replica states (trimtab.sim.fleet.types).
PENDING, SERVED, SHED, TIMED_OUT, FAILED = 0, 1, 2, 3, 4
STARTING, READY, DRAINING, STOPPED = 0, 1, 2, 3

# Per request, int32 ``rqi[i, :]``.
C_COMP, C_BLK, C_NXT, C_SLOT, C_GEN, C_PRE, C_REP = 0, 1, 2, 3, 4, 5, 6
N_RQI = 7
# Per request, float64 ``rqf[i, :]``.
T_SCHED, T_TOK, T_FIN, T_LAST = 0, 1, 2, 3
N_RQF = 4
# Per replica, int64 ``rp[r, :]`` (R_KQ is a whole-fleet list stored by row).
(R_STATE, R_BUSY, R_STEPS, R_OUT, R_NRUN, R_NWAIT, R_WHEAD, R_WTAIL, R_FREE, R_PRE, R_NSCHED,
 R_FED, R_KQ, R_LRUH, R_LRUT, R_NCACHED, R_NUNC, R_NSLOT) = range(18)
N_RP = 18
# Per replica and running slot, int32 ``rs[r, :, k]``.
S_RUN, S_SQ, S_SNEW, S_SLOTS = 0, 1, 2, 3
N_RS = 4
# Per replica and KV block (prefix caching), int32 ``blk[r, :, b]``.
B_REF, B_KEYED, B_PREV, B_NEXT, B_USTACK = 0, 1, 2, 3, 4
N_BLK = 5
# The step log: int64 ``logi[m, :]`` and float64 ``logf[m, :]``.
LOG_INT = ("replica", "prefill_tokens", "decode_seqs", "kv_tokens", "attn_pairs", "scheduled",
           "running", "waiting", "blocks_used")
LOG_FLOAT = ("start_s", "end_s")

# ``Glob.ist`` (int64) slots.
(I_AI, I_QHEAD, I_QTAIL, I_QLEN, I_NREP, I_HSIZE, I_FIN, I_LOG, I_LOGCAP, I_NLIVE, I_NREADY,
 I_NBUSY, I_NELIG, I_RUN_TOT, I_WAIT_TOT, I_BLK_TOT, I_STEPS, I_PROMPT, I_OUTPUT, I_PREEMPT,
 I_PQ, I_PH, I_ITLC, I_SERVED, I_SHED, I_TIMEDOUT, I_FAILED, I_ARRIVED, I_MAXSEQ, I_MNBT,
 I_CHUNK, I_BS, I_NB, I_PREFIX, I_ROUTER, I_MAXQ, I_LIMIT, I_REC, I_HAS_TO, I_HMASK, I_HSHIFT,
 I_GAP_IDX, I_SEED) = range(43)
N_IST = 43
# ``Glob.fst`` (float64) slots.
(F_NOW, F_LAST_T, F_A_LIVE, F_A_READY, F_A_BUSY, F_A_SYSTEM, F_A_QUEUE, F_A_RUNNING,
 F_A_WAITING, F_A_BLOCKS, F_ITL_SUM, F_TIMEOUT, F_C0, F_CP, F_CD, F_CKV, F_CA, F_CV,
 F_LAST_GAP, F_NS, F_NHALF) = range(21)
N_FST = 21

NO_LIMIT = 1 << 62
ROUTERS = {"least_outstanding": 0, "prefix_aware": 1}
PREFIX_AWARE_SLACK = 4          # SPEC: candidates have outstanding <= min + 4

Reqs = namedtuple("Reqs", ["arrival_s", "prompt", "output", "key_off", "keys", "outcome",
                           "rqi", "rqf", "fin"])
Reps = namedtuple("Reps", ["rp", "heap_r", "heap_t", "hpos", "rs", "blk", "bkey", "htk", "htb",
                           "btab"])
Glob = namedtuple("Glob", ["ist", "fst", "itl_counts", "bounds", "scratch"])
Log = namedtuple("Log", ["logi", "logf"])

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U11 = np.uint64(11)
_U27 = np.uint64(27)
_U30 = np.uint64(30)
_U31 = np.uint64(31)
_U32 = np.uint64(32)
_ONE = np.uint64(1)
_INV53 = 1.0 / 9007199254740992.0

_JIT = dict(cache=True, nogil=True, _nrt=False)
_INLINE = dict(cache=True, nogil=True, _nrt=False, inline="always")   # one call site
_NRT = dict(cache=True, nogil=True)          # the test helpers that return new arrays


# --------------------------------------------------------------------------- noise
@njit(**_JIT)
def splitmix64(x):
    """SplitMix64 on uint64 (wrap-around), as ``types.splitmix64``."""
    x = x + _GOLDEN
    z = x
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return z ^ (z >> _U31)


@njit(**_JIT)
def noise_factor(seed, replica, step, cv):
    """``types.noise_factor`` with ``seed`` already reduced to uint64; bit for bit the same."""
    if cv == 0.0:
        return 1.0
    h = splitmix64(seed ^ splitmix64((np.uint64(replica) << _U32) ^ np.uint64(step)))
    h2 = splitmix64(h)
    u1 = float((h >> _U11) + _ONE) * _INV53
    u2 = float(h2 >> _U11) * _INV53
    z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    s2 = math.log1p(cv * cv)
    return math.exp(math.sqrt(s2) * z - s2 / 2.0)


@njit(**_JIT)
def _noise_fast(seed, replica, step, cv, s, half_s2):
    """``noise_factor`` with ``s = sqrt(log1p(cv * cv))`` and ``half_s2 = log1p(cv * cv) / 2``
    computed once (the same doubles, so the same result bit for bit)."""
    if cv == 0.0:
        return 1.0
    h = splitmix64(seed ^ splitmix64((np.uint64(replica) << _U32) ^ np.uint64(step)))
    h2 = splitmix64(h)
    u1 = float((h >> _U11) + _ONE) * _INV53
    u2 = float(h2 >> _U11) * _INV53
    z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    return math.exp(s * z - half_s2)


@njit(**_JIT)
def mean_ms(fst, p, d, k, a):
    """``StepModel.mean_ms`` in its evaluation order."""
    return (fst[F_C0] + fst[F_CP] * float(p) + fst[F_CD] * float(d) + fst[F_CKV] * float(k)
            + fst[F_CA] * float(a))


@njit(**_NRT)
def noise_many(seed, replicas, steps, cv):
    """``noise_factor`` over arrays (for the bit-for-bit test)."""
    out = np.empty(len(replicas))
    for k in range(len(replicas)):
        out[k] = noise_factor(seed, replicas[k], steps[k], cv)
    return out


@njit(**_NRT)
def step_s_many(fst, seed, replicas, steps, p, d, k, a):
    """Step durations as the engine computes them (for the bit-for-bit test)."""
    out = np.empty(len(p))
    for j in range(len(p)):
        out[j] = (mean_ms(fst, p[j], d[j], k[j], a[j]) / 1000.0
                  * _noise_fast(seed, replicas[j], steps[j], fst[F_CV], fst[F_NS],
                                fst[F_NHALF]))
    return out


# --------------------------------------------------------------------------- event heap
@njit(**_JIT)
def _sift_up(hr, ht, hpos, k):
    r = hr[k]
    t = ht[k]
    while k > 0:
        p = (k - 1) >> 1
        tp = ht[p]
        if t < tp or (t == tp and r < hr[p]):
            hr[k] = hr[p]
            ht[k] = tp
            hpos[hr[k]] = k
            k = p
        else:
            break
    hr[k] = r
    ht[k] = t
    hpos[r] = k
    return k


@njit(**_JIT)
def _sift_down(hr, ht, hpos, n, k):
    r = hr[k]
    t = ht[k]
    while True:
        c = 2 * k + 1
        if c >= n:
            break
        tc = ht[c]
        if c + 1 < n:
            t1 = ht[c + 1]
            if t1 < tc or (t1 == tc and hr[c + 1] < hr[c]):
                c += 1
                tc = t1
        if tc < t or (tc == t and hr[c] < r):
            hr[k] = hr[c]
            ht[k] = tc
            hpos[hr[k]] = k
            k = c
        else:
            break
    hr[k] = r
    ht[k] = t
    hpos[r] = k


@njit(**_JIT)
def _set_event(P, G, r, t):
    """``r``'s one pending event at ``t`` (new, or moved in place)."""
    k = P.hpos[r]
    if k < 0:
        k = G.ist[I_HSIZE]
        G.ist[I_HSIZE] = k + 1
    P.heap_r[k] = r
    P.heap_t[k] = t
    k = _sift_up(P.heap_r, P.heap_t, P.hpos, k)
    _sift_down(P.heap_r, P.heap_t, P.hpos, G.ist[I_HSIZE], k)


@njit(**_JIT)
def _remove_event(P, G, r):
    k = P.hpos[r]
    if k < 0:
        return
    n = G.ist[I_HSIZE] - 1
    G.ist[I_HSIZE] = n
    P.hpos[r] = -1
    if k < n:
        P.heap_r[k] = P.heap_r[n]
        P.heap_t[k] = P.heap_t[n]
        k = _sift_up(P.heap_r, P.heap_t, P.hpos, k)
        _sift_down(P.heap_r, P.heap_t, P.hpos, n, k)


# --------------------------------------------------------------------------- bookkeeping
@njit(**_JIT)
def _eligible(rp, ist, r):
    return rp[r, R_STATE] == READY and rp[r, R_OUT] < ist[I_LIMIT]


@njit(**_JIT)
def _set_state(rp, ist, r, s):
    old = rp[r, R_STATE]
    e0 = _eligible(rp, ist, r)
    if old <= DRAINING:
        ist[I_NLIVE] -= 1
    if old == READY:
        ist[I_NREADY] -= 1
    rp[r, R_STATE] = s
    if s <= DRAINING:
        ist[I_NLIVE] += 1
    if s == READY:
        ist[I_NREADY] += 1
    ist[I_NELIG] += int(_eligible(rp, ist, r)) - int(e0)


@njit(**_JIT)
def _out_add(rp, ist, r, d):
    e0 = _eligible(rp, ist, r)
    rp[r, R_OUT] += d
    ist[I_NELIG] += int(_eligible(rp, ist, r)) - int(e0)


@njit(**_JIT)
def recount_eligible(rp, ist):
    n = 0
    for r in range(ist[I_NREP]):
        if _eligible(rp, ist, r):
            n += 1
    ist[I_NELIG] = n


@njit(**_JIT)
def _finish(Q, ist, i, outcome, t, counter):
    Q.outcome[i] = outcome
    Q.rqf[i, T_FIN] = t
    ist[counter] += 1
    f = ist[I_FIN]
    Q.fin[f] = i
    ist[I_FIN] = f + 1


@njit(**_JIT)
def _add_areas(G, dt, queue, system):
    ist = G.ist
    fst = G.fst
    fst[F_A_LIVE] += ist[I_NLIVE] * dt
    fst[F_A_READY] += ist[I_NREADY] * dt
    fst[F_A_BUSY] += ist[I_NBUSY] * dt
    fst[F_A_SYSTEM] += system * dt
    fst[F_A_QUEUE] += queue * dt
    fst[F_A_RUNNING] += ist[I_RUN_TOT] * dt
    fst[F_A_WAITING] += ist[I_WAIT_TOT] * dt
    fst[F_A_BLOCKS] += ist[I_BLK_TOT] * dt


@njit(**_JIT)
def _integrate(Q, G, t):
    """Areas over (last time, t]: counts are constant in between, except that router-queue
    requests leave the queue and the system at their timeout (their finish time), before the
    purge that removes them."""
    ist = G.ist
    fst = G.fst
    t0 = fst[F_LAST_T]
    if not t > t0:
        return
    queue = ist[I_QLEN]
    system = ist[I_ARRIVED] - (ist[I_SERVED] + ist[I_SHED] + ist[I_TIMEDOUT] + ist[I_FAILED])
    if ist[I_HAS_TO] and queue > 0:
        to = fst[F_TIMEOUT]
        i = ist[I_QHEAD]
        for _ in range(ist[I_QLEN]):             # deadlines rise along the queue
            deadline = Q.arrival_s[i] + to
            if deadline >= t:
                break
            if deadline > t0:
                _add_areas(G, deadline - t0, queue, system)
                t0 = deadline
            queue -= 1
            system -= 1
            i = Q.rqi[i, C_NXT]
    _add_areas(G, t - t0, queue, system)
    fst[F_LAST_T] = t


@njit(**_JIT)
def _holds_nothing(rp, r):
    return rp[r, R_NRUN] == 0 and rp[r, R_NWAIT] == 0


@njit(**_JIT)
def _wait_push_tail(rqi, rp, ist, r, i):
    rqi[i, C_NXT] = -1
    if rp[r, R_NWAIT] == 0:
        rp[r, R_WHEAD] = i
    else:
        rqi[rp[r, R_WTAIL], C_NXT] = i
    rp[r, R_WTAIL] = i
    rp[r, R_NWAIT] += 1
    ist[I_WAIT_TOT] += 1


@njit(**_JIT)
def _wait_push_front(rqi, rp, ist, r, i):
    if rp[r, R_NWAIT] == 0:
        rqi[i, C_NXT] = -1
        rp[r, R_WTAIL] = i
    else:
        rqi[i, C_NXT] = rp[r, R_WHEAD]
    rp[r, R_WHEAD] = i
    rp[r, R_NWAIT] += 1
    ist[I_WAIT_TOT] += 1


@njit(**_JIT)
def _wait_pop(rqi, rp, ist, r):
    i = rp[r, R_WHEAD]
    rp[r, R_WHEAD] = rqi[i, C_NXT]
    rp[r, R_NWAIT] -= 1
    ist[I_WAIT_TOT] -= 1
    return i


# --------------------------------------------------------------------------- prefix cache
@njit(**_JIT)
def _home(ist, key):
    return np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(ist[I_HSHIFT]))


@njit(**_JIT)
def _ht_find(P, ist, r, key):
    mask = ist[I_HMASK]
    s = _home(ist, key)
    while True:
        b = P.htb[r, s]
        if b < 0:
            return -1
        if P.htk[r, s] == key:
            return b
        s = (s + 1) & mask


@njit(**_JIT)
def _ht_insert(P, ist, r, key, b):
    mask = ist[I_HMASK]
    s = _home(ist, key)
    while P.htb[r, s] >= 0:
        s = (s + 1) & mask
    P.htk[r, s] = key
    P.htb[r, s] = b


@njit(**_JIT)
def _ht_delete(P, ist, r, key):
    mask = ist[I_HMASK]
    s = _home(ist, key)
    while P.htb[r, s] < 0 or P.htk[r, s] != key:
        s = (s + 1) & mask
    P.htb[r, s] = -1
    j = s
    while True:          # backward shift: close the gap for entries probed past it
        j = (j + 1) & mask
        if P.htb[r, j] < 0:
            return
        h = _home(ist, P.htk[r, j])
        # the entry at j stays unless its home lies cyclically outside (s, j]
        if s <= j:
            stay = s < h <= j
        else:
            stay = h > s or h <= j
        if not stay:
            P.htk[r, s] = P.htk[r, j]
            P.htb[r, s] = P.htb[r, j]
            P.htb[r, j] = -1
            s = j


@njit(**_JIT)
def _lru_remove(P, r, b):
    blk = P.blk
    p = blk[r, B_PREV, b]
    n = blk[r, B_NEXT, b]
    if p >= 0:
        blk[r, B_NEXT, p] = n
    else:
        P.rp[r, R_LRUH] = n
    if n >= 0:
        blk[r, B_PREV, n] = p
    else:
        P.rp[r, R_LRUT] = p
    P.rp[r, R_NCACHED] -= 1


@njit(**_JIT)
def _lru_append(P, r, b):
    blk = P.blk
    t = P.rp[r, R_LRUT]
    blk[r, B_PREV, b] = t
    blk[r, B_NEXT, b] = -1
    if t >= 0:
        blk[r, B_NEXT, t] = b
    else:
        P.rp[r, R_LRUH] = b
    P.rp[r, R_LRUT] = b
    P.rp[r, R_NCACHED] += 1


@njit(**_JIT)
def _take_new_block(P, ist, r):
    """A block for new KV: free-uncached if any, else the LRU head (its key dropped)."""
    rp = P.rp
    if rp[r, R_NUNC] > 0:
        rp[r, R_NUNC] -= 1
        b = P.blk[r, B_USTACK, rp[r, R_NUNC]]
    else:
        b = rp[r, R_LRUH]
        _lru_remove(P, r, b)
        _ht_delete(P, ist, r, P.bkey[r, b])
        P.blk[r, B_KEYED, b] = 0
    P.blk[r, B_REF, b] = 1
    rp[r, R_FREE] -= 1
    ist[I_BLK_TOT] += 1
    return b


@njit(**_JIT)
def _lookup(Q, P, ist, r, i, out, keep):
    """Leading keys of ``i`` held on ``r``; their blocks into ``out`` when ``keep``."""
    off = Q.key_off[i]
    nk = Q.key_off[i + 1] - off
    j = 0
    while j < nk:
        b = _ht_find(P, ist, r, Q.keys[off + j])
        if b < 0:
            break
        if keep:
            out[j] = b
        j += 1
    return j


@njit(**_JIT)
def _free_blocks(Q, P, ist, r, q):
    """Free ``q``'s blocks, last block first; keyed ones join the LRU tail."""
    rqi = Q.rqi
    nb = rqi[q, C_BLK]
    rp = P.rp
    if ist[I_PREFIX]:
        s = rqi[q, C_SLOT]
        blk = P.blk
        for j in range(nb - 1, -1, -1):
            b = P.btab[r, s, j]
            c = blk[r, B_REF, b] - 1
            blk[r, B_REF, b] = c
            if c == 0:
                if blk[r, B_KEYED, b]:
                    _lru_append(P, r, b)
                else:
                    blk[r, B_USTACK, rp[r, R_NUNC]] = b
                    rp[r, R_NUNC] += 1
                rp[r, R_FREE] += 1
                ist[I_BLK_TOT] -= 1
        P.rs[r, S_SLOTS, rp[r, R_NSLOT]] = s
        rp[r, R_NSLOT] += 1
        rqi[q, C_SLOT] = -1
    else:
        rp[r, R_FREE] += nb
        ist[I_BLK_TOT] -= nb
    rqi[q, C_BLK] = 0


@njit(**_JIT)
def _key_blocks(Q, P, ist, r, q, old, new):
    """Blocks of ``q`` that became full get its keys, unless a block here holds them."""
    bs = ist[I_BS]
    off = Q.key_off[q]
    nk = Q.key_off[q + 1] - off
    j1 = min(new // bs, nk)
    s = Q.rqi[q, C_SLOT]
    for j in range(old // bs, j1):
        k = Q.keys[off + j]
        if _ht_find(P, ist, r, k) < 0:
            b = P.btab[r, s, j]
            P.bkey[r, b] = k
            P.blk[r, B_KEYED, b] = 1
            _ht_insert(P, ist, r, k, b)


# --------------------------------------------------------------------------- routing
@njit(**_JIT)
def _route(Q, P, G, i):
    """The eligible replica for ``i`` (there is one)."""
    ist = G.ist
    rp = P.rp
    nrep = ist[I_NREP]
    lim = ist[I_LIMIT]
    best = -1
    if ist[I_ROUTER] == 0:
        bo = NO_LIMIT
        for r in range(nrep):
            o = rp[r, R_OUT]
            if rp[r, R_STATE] == READY and o < lim and o < bo:
                best = r
                bo = o
        return best
    lo = NO_LIMIT
    for r in range(nrep):
        o = rp[r, R_OUT]
        if rp[r, R_STATE] == READY and o < lim and o < lo:
            lo = o
    bm = -1
    bo = NO_LIMIT
    for r in range(nrep):
        o = rp[r, R_OUT]
        if rp[r, R_STATE] == READY and o < lim and o <= lo + PREFIX_AWARE_SLACK:
            m = _lookup(Q, P, ist, r, i, G.scratch, False) if ist[I_PREFIX] else 0
            if m > bm or (m == bm and o < bo):
                best = r
                bm = m
                bo = o
    return best


@njit(**_JIT)
def _purge(Q, ist, fst, t):
    if not ist[I_HAS_TO]:
        return
    to = fst[F_TIMEOUT]
    while ist[I_QLEN] > 0:
        h = ist[I_QHEAD]
        if Q.arrival_s[h] + to <= t:
            ist[I_QHEAD] = Q.rqi[h, C_NXT]
            ist[I_QLEN] -= 1
            _finish(Q, ist, h, TIMED_OUT, Q.arrival_s[h] + to, I_TIMEDOUT)
        else:
            break


@njit(**_JIT)
def _give(Q, P, ist, r, i):
    _wait_push_tail(Q.rqi, P.rp, ist, r, i)
    Q.rqi[i, C_REP] = r
    _out_add(P.rp, ist, r, 1)


@njit(**_JIT)
def _feed_route(Q, P, G, t):
    """A feed's first half: purge, route the queue's head while a replica is eligible; the
    replicas fed, in the order first fed, listed to kick. Returns how many."""
    ist = G.ist
    rp = P.rp
    _purge(Q, ist, G.fst, t)
    nf = 0
    while ist[I_QLEN] > 0 and ist[I_NELIG] > 0:
        i = ist[I_QHEAD]
        ist[I_QHEAD] = Q.rqi[i, C_NXT]
        ist[I_QLEN] -= 1
        r = _route(Q, P, G, i)
        _give(Q, P, ist, r, i)
        if not rp[r, R_FED]:
            rp[r, R_FED] = 1
            rp[nf, R_KQ] = r
            nf += 1
    for k in range(nf):
        rp[rp[k, R_KQ], R_FED] = 0
    return nf


@njit(**_JIT)
def _arrival(Q, P, G, i, t):
    """Arrival of ``i``: shed, queued, or given to a replica; returns how many to kick."""
    ist = G.ist
    ist[I_ARRIVED] += 1
    _purge(Q, ist, G.fst, t)
    if ist[I_QLEN] > 0 or ist[I_NELIG] == 0:
        if ist[I_MAXQ] >= 0 and ist[I_QLEN] >= ist[I_MAXQ]:
            _finish(Q, ist, i, SHED, t, I_SHED)
        else:
            Q.rqi[i, C_NXT] = -1
            if ist[I_QLEN] == 0:
                ist[I_QHEAD] = i
            else:
                Q.rqi[ist[I_QTAIL], C_NXT] = i
            ist[I_QTAIL] = i
            ist[I_QLEN] += 1
        return 0
    r = _route(Q, P, G, i)
    _give(Q, P, ist, r, i)
    P.rp[0, R_KQ] = r
    return 1


# --------------------------------------------------------------------------- one step
@njit(**_JIT)
def _preempt_last(Q, P, ist, r):
    rp = P.rp
    n = rp[r, R_NRUN] - 1
    v = P.rs[r, S_RUN, n]
    rp[r, R_NRUN] = n
    ist[I_RUN_TOT] -= 1
    _free_blocks(Q, P, ist, r, v)
    Q.rqi[v, C_COMP] = 0
    _wait_push_front(Q.rqi, rp, ist, r, v)
    Q.rqi[v, C_PRE] += 1
    rp[r, R_PRE] += 1
    ist[I_PREEMPT] += 1
    return v


@njit(**_INLINE)
def _schedule(Q, P, G, L, r, t):
    """SPEC "One step": running first, then waiting; failures; the step's duration."""
    ist = G.ist
    rp = P.rp
    rqi = Q.rqi
    prompt = Q.prompt
    bs = ist[I_BS]
    chunked = ist[I_CHUNK] != 0
    prefix = ist[I_PREFIX] != 0
    maxseq = ist[I_MAXSEQ]
    run = P.rs[r, S_RUN]
    sq = P.rs[r, S_SQ]
    snew = P.rs[r, S_SNEW]
    scratch = G.scratch
    while True:
        budget = ist[I_MNBT]
        preempted = False
        ns = 0
        pt = 0          # step 4's P, D, K, A, summed as requests are scheduled
        dn = 0
        kv = 0
        ap = 0
        # 1. running first, oldest admitted first
        k = 0
        while k < rp[r, R_NRUN]:
            q = run[k]
            nc = rqi[q, C_COMP]
            new = prompt[q] + rqi[q, C_GEN] - nc
            if new > budget:
                if not chunked:
                    k += 1
                    continue
                new = budget
            if new == 0:
                k += 1
                continue
            need = (nc + new + bs - 1) // bs - rqi[q, C_BLK]
            stop = False
            while need > rp[r, R_FREE]:
                v = _preempt_last(Q, P, ist, r)
                preempted = True
                if v == q:
                    stop = True
                    break
            if stop:
                break
            if need > 0:
                if prefix:
                    sl = rqi[q, C_SLOT]
                    nb = rqi[q, C_BLK]
                    for j in range(need):
                        P.btab[r, sl, nb + j] = _take_new_block(P, ist, r)
                else:
                    rp[r, R_FREE] -= need
                    ist[I_BLK_TOT] += need
                rqi[q, C_BLK] += need
            sq[ns] = q
            snew[ns] = new
            ns += 1
            budget -= new
            k += 1
            # step 4's figures, before the update (a scheduled request is never preempted:
            # victims come from the end of running, after the one being scheduled)
            g = rqi[q, C_GEN]
            if new == 1 and g >= 1 and nc == prompt[q] + g - 1:
                dn += 1
            else:
                pt += new
                ap += new * (nc + new)
            kv += nc + new
        # 2. waiting next, unless step 1 preempted
        if not preempted:
            while rp[r, R_NWAIT] > 0 and budget > 0 and rp[r, R_NRUN] < maxseq:
                w = rp[r, R_WHEAD]
                ntok = prompt[w] + rqi[w, C_GEN]
                hit = 0
                cached_hit = 0
                if prefix:
                    hit = min(_lookup(Q, P, ist, r, w, scratch, True), (ntok - 1) // bs)
                    for j in range(hit):
                        if P.blk[r, B_REF, scratch[j]] == 0:
                            cached_hit += 1
                nc = hit * bs
                new = ntok - nc
                if new > budget:
                    if not chunked:
                        break
                    new = budget
                need = (nc + new + bs - 1) // bs - hit
                if need > rp[r, R_FREE] - cached_hit:
                    break
                _wait_pop(rqi, rp, ist, r)
                rqi[w, C_COMP] = nc
                if prefix:
                    n = rp[r, R_NSLOT] - 1
                    rp[r, R_NSLOT] = n
                    sl = P.rs[r, S_SLOTS, n]
                    rqi[w, C_SLOT] = sl
                    for j in range(hit):
                        b = scratch[j]
                        if P.blk[r, B_REF, b] == 0:
                            _lru_remove(P, r, b)
                            rp[r, R_FREE] -= 1
                            ist[I_BLK_TOT] += 1
                        P.blk[r, B_REF, b] += 1
                        P.btab[r, sl, j] = b
                    for j in range(need):
                        P.btab[r, sl, hit + j] = _take_new_block(P, ist, r)
                    ist[I_PQ] += ntok
                    ist[I_PH] += hit * bs
                else:
                    rp[r, R_FREE] -= need
                    ist[I_BLK_TOT] += need
                rqi[w, C_BLK] = hit + need
                n = rp[r, R_NRUN]
                run[n] = w
                rp[r, R_NRUN] = n + 1
                ist[I_RUN_TOT] += 1
                sq[ns] = w
                snew[ns] = new
                ns += 1
                budget -= new
                if math.isnan(Q.rqf[w, T_SCHED]):
                    Q.rqf[w, T_SCHED] = t
                g = rqi[w, C_GEN]
                if new == 1 and g >= 1 and nc == prompt[w] + g - 1:
                    dn += 1
                else:
                    pt += new
                    ap += new * (nc + new)
                kv += nc + new
        # 3. nothing scheduled: fail a head that can never be admitted, or stay idle
        if ns == 0:
            if rp[r, R_NRUN] == 0 and rp[r, R_NWAIT] > 0:
                w = _wait_pop(rqi, rp, ist, r)
                _finish(Q, ist, w, FAILED, t, I_FAILED)
                _out_add(rp, ist, r, -1)
                if rp[r, R_STATE] == DRAINING and _holds_nothing(rp, r):
                    _set_state(rp, ist, r, STOPPED)
                continue
            return
        # 4. duration
        idx = rp[r, R_STEPS]
        dur = mean_ms(G.fst, pt, dn, kv, ap) / 1000.0 * _noise_fast(
            np.uint64(ist[I_SEED]), r, idx, G.fst[F_CV], G.fst[F_NS], G.fst[F_NHALF])
        rp[r, R_STEPS] = idx + 1
        ist[I_STEPS] += 1
        rp[r, R_NSCHED] = ns
        rp[r, R_BUSY] = 1
        ist[I_NBUSY] += 1
        t_end = t + dur
        _set_event(P, G, r, t_end)
        if ist[I_REC]:
            m = ist[I_LOG]
            li = L.logi
            li[m, 0] = r
            li[m, 1] = pt
            li[m, 2] = dn
            li[m, 3] = kv
            li[m, 4] = ap
            li[m, 5] = ns
            li[m, 6] = rp[r, R_NRUN]
            li[m, 7] = rp[r, R_NWAIT]
            li[m, 8] = ist[I_NB] - rp[r, R_FREE]
            L.logf[m, 0] = t
            L.logf[m, 1] = t_end
            ist[I_LOG] = m + 1
        return


@njit(**_INLINE)
def _settle(Q, P, G, L, t, nk):
    """Kick the ``nk`` listed replicas in order; while a round of kicks FAILED a request, feed
    again (a failure frees a slot under the limit) and kick the replicas that feed fed."""
    ist = G.ist
    rp = P.rp
    while nk > 0:
        failed0 = ist[I_FAILED]
        for k in range(nk):
            r = rp[k, R_KQ]
            s = rp[r, R_STATE]
            if ((s == READY or s == DRAINING) and rp[r, R_BUSY] == 0
                    and (rp[r, R_NRUN] > 0 or rp[r, R_NWAIT] > 0)):
                _schedule(Q, P, G, L, r, t)
        if ist[I_FAILED] == failed0:
            return
        nk = _feed_route(Q, P, G, t)


@njit(**_JIT)
def _itl_bucket(bounds, gap):
    lo = 0
    hi = len(bounds)
    while lo < hi:
        mid = (lo + hi) >> 1
        if bounds[mid] < gap:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**_INLINE)
def _step_tokens(Q, P, G, r, t):
    """A step of ``r`` ends at ``t``: KV computed, tokens made, finished requests leave."""
    ist = G.ist
    fst = G.fst
    rp = P.rp
    rqi = Q.rqi
    rqf = Q.rqf
    prefix = ist[I_PREFIX] != 0
    rp[r, R_BUSY] = 0
    ist[I_NBUSY] -= 1
    ns = rp[r, R_NSCHED]
    sq = P.rs[r, S_SQ]
    snew = P.rs[r, S_SNEW]
    done = 0
    for k in range(ns):
        q = sq[k]
        old = rqi[q, C_COMP]
        c = old + snew[k]
        rqi[q, C_COMP] = c
        if prefix:
            _key_blocks(Q, P, ist, r, q, old, c)
        g = rqi[q, C_GEN]
        if c == Q.prompt[q] + g:
            if g == 0:
                rqf[q, T_TOK] = t
                ist[I_PROMPT] += Q.prompt[q]
            else:
                gap = t - rqf[q, T_LAST]
                if gap == fst[F_LAST_GAP]:          # most decodes of a step share one gap
                    b = ist[I_GAP_IDX]
                else:
                    b = _itl_bucket(G.bounds, gap)
                    fst[F_LAST_GAP] = gap
                    ist[I_GAP_IDX] = b
                G.itl_counts[b] += 1
                fst[F_ITL_SUM] += gap
                ist[I_ITLC] += 1
            g += 1
            rqi[q, C_GEN] = g
            ist[I_OUTPUT] += 1
            rqf[q, T_LAST] = t
            if g == Q.output[q]:
                _finish(Q, ist, q, SERVED, t, I_SERVED)
                _free_blocks(Q, P, ist, r, q)
                _out_add(rp, ist, r, -1)
                done += 1
    rp[r, R_NSCHED] = 0
    if done:
        run = P.rs[r, S_RUN]
        n = rp[r, R_NRUN]
        m = 0
        for k in range(n):
            q = run[k]
            if Q.outcome[q] == PENDING:
                run[m] = q
                m += 1
        rp[r, R_NRUN] = m
        ist[I_RUN_TOT] -= n - m


# --------------------------------------------------------------------------- entry points
@njit(**_JIT)
def advance(Q, P, G, L, until):
    """Process every event with time <= ``until``; 1 when the step log must grow first."""
    ist = G.ist
    rp = P.rp
    n = len(Q.arrival_s)
    arr = Q.arrival_s
    while True:
        # One handler starts at most one step per replica (a started one is busy).
        if ist[I_REC] and ist[I_LOGCAP] - ist[I_LOG] < ist[I_NREP] + 1:
            return 1
        ai = ist[I_AI]
        r = -1
        after = -1          # a step end: its replica's own kick comes after the feed's kicks
        if ist[I_HSIZE] > 0:
            r = P.heap_r[0]
            t = P.heap_t[0]
            if ai < n and arr[ai] < t:
                r = -1
        if r >= 0:
            if t > until:
                break
            _integrate(Q, G, t)
            nk = 0
            if rp[r, R_STATE] == STARTING:
                _set_state(rp, ist, r, READY)
                nk = _feed_route(Q, P, G, t)
            else:
                _step_tokens(Q, P, G, r, t)
                if ist[I_QLEN] > 0:
                    nk = _feed_route(Q, P, G, t)
                after = r
        else:
            if ai >= n or arr[ai] > until:
                break
            t = arr[ai]
            _integrate(Q, G, t)
            ist[I_AI] = ai + 1
            nk = _arrival(Q, P, G, ai, t)
        while True:         # one call site of _settle, so that it is inlined once
            if nk:
                _settle(Q, P, G, L, t, nk)
            if after < 0:
                break
            if rp[after, R_STATE] == DRAINING and _holds_nothing(rp, after):
                _set_state(rp, ist, after, STOPPED)
                nk = 0
            else:
                rp[0, R_KQ] = after
                nk = 1
            after = -1
        if r >= 0 and rp[r, R_BUSY] == 0:
            _remove_event(P, G, r)
    _integrate(Q, G, until)
    _purge(Q, ist, G.fst, until)
    G.fst[F_NOW] = until
    return 0


@njit(**_JIT)
def feed_now(Q, P, G, L):
    """A feed at ``now`` (a replica became READY, the limit changed)."""
    t = G.fst[F_NOW]
    nk = _feed_route(Q, P, G, t)
    if nk:
        _settle(Q, P, G, L, t, nk)


@njit(**_JIT)
def add_replica(P, G, r, ready_at_s):
    """Replica ``r`` (the next id; its rows fresh): READY now (the caller then feeds, True)
    or STARTING with its READY event (False)."""
    ist = G.ist
    ist[I_NREP] = r + 1
    P.rp[r, R_STATE] = STOPPED
    if ready_at_s <= G.fst[F_NOW]:
        _set_state(P.rp, ist, r, READY)
        return True
    _set_state(P.rp, ist, r, STARTING)
    _set_event(P, G, r, ready_at_s)
    return False


@njit(**_JIT)
def remove_replica(P, G, r):
    rp = P.rp
    s = rp[r, R_STATE]
    if s == STARTING:
        _remove_event(P, G, r)
        _set_state(rp, G.ist, r, STOPPED)
    elif s == READY:
        _set_state(rp, G.ist, r, STOPPED if _holds_nothing(rp, r) else DRAINING)


@njit(**_JIT)
def set_queue_timeout(Q, G, has, t_s):
    G.ist[I_HAS_TO] = has
    G.fst[F_TIMEOUT] = t_s
    _purge(Q, G.ist, G.fst, G.fst[F_NOW])
