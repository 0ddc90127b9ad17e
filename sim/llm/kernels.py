"""The numba kernels of the compiled LLM fleet engine (``core.py``), over struct-of-arrays state.

Everything follows ``sim/llm/SPEC.md`` line by line; the state lives in three named tuples of
numpy arrays (``Reqs``: per request, ``Reps``: per replica, ``Glob``: scalars, counters and
buffers) plus the step log (``Log``), all built and grown by ``core.py`` between calls.

Data structures (why they are fast):
- replica events: an indexed binary min-heap of replica ids keyed ``(ev_t[r], r)``; the replica
  being handled stays at the top while it is handled and is re-keyed in place when it starts its
  next step (one sift instead of a pop and a push);
- arrivals: a pointer into the sorted arrival array;
- the router queue and every replica's waiting deque: singly linked lists through ``nxt`` (a
  request is in at most one of them; a preempted request is pushed at the front);
- running: ``run[r, :n_run[r]]`` in admission order; the step in progress: ``sched_q`` and
  ``sched_new`` of the replica;
- prefix caching: per replica a linear-probing hash table key -> block (backward-shift
  deletion), per block a reference count, a key and links of the LRU list of free cached
  blocks, a stack of free uncached blocks, and per running request a row of its block ids
  (``btab[r, slot[q], :]``).
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

# Outcomes and replica states (trimtab.sim.fleet.types).
PENDING, SERVED, SHED, TIMED_OUT, FAILED = 0, 1, 2, 3, 4
STARTING, READY, DRAINING, STOPPED = 0, 1, 2, 3

# ``Glob.ist`` (int64) slots.
I_AI = 0            # next arrival (= arrivals done)
I_QHEAD = 1         # router queue head (-1: empty)
I_QTAIL = 2
I_QLEN = 3
I_NREP = 4          # replicas created
I_HSIZE = 5         # heap size
I_FIN = 6           # finished-log length
I_LOG = 7           # step-log length
I_LOGCAP = 8
I_NLIVE = 9
I_NREADY = 10
I_NBUSY = 11
I_NELIG = 12        # READY replicas with outstanding < limit
I_RUN_TOT = 13
I_WAIT_TOT = 14
I_BLK_TOT = 15
I_STEPS = 16
I_PROMPT = 17
I_OUTPUT = 18
I_PREEMPT = 19
I_PQ = 20
I_PH = 21
I_ITLC = 22
I_SERVED = 23
I_SHED = 24
I_TIMEDOUT = 25
I_FAILED = 26
I_ARRIVED = 27
I_MAXSEQ = 28
I_MNBT = 29
I_CHUNK = 30
I_BS = 31
I_NB = 32
I_PREFIX = 33
I_ROUTER = 34       # 0 least_outstanding, 1 prefix_aware
I_MAXQ = 35         # -1: unbounded
I_LIMIT = 36
I_REC = 37
I_HAS_TO = 38
I_HMASK = 39        # hash table size - 1
I_HSHIFT = 40       # 64 - log2(hash table size)
I_GAP_IDX = 41      # ITL bucket of the last gap seen
N_IST = 42

# ``Glob.fst`` (float64) slots.
F_NOW = 0
F_LAST_T = 1        # areas integrated up to here
F_A_LIVE = 2
F_A_READY = 3
F_A_BUSY = 4
F_A_SYSTEM = 5
F_A_QUEUE = 6
F_A_RUNNING = 7
F_A_WAITING = 8
F_A_BLOCKS = 9
F_ITL_SUM = 10
F_TIMEOUT = 11
F_C0 = 12
F_CP = 13
F_CD = 14
F_CKV = 15
F_CA = 16
F_CV = 17
F_LAST_GAP = 18
N_FST = 19

NO_LIMIT = 1 << 62
ROUTERS = {"least_outstanding": 0, "prefix_aware": 1}

Reqs = namedtuple("Reqs", [
    "arrival_s", "prompt", "output", "key_off", "keys",
    "outcome", "replica_of", "first_scheduled_s", "first_token_s", "finish_s", "preemptions",
    "generated", "computed", "blocks", "last_token_s", "nxt", "slot"])
Reps = namedtuple("Reps", [
    "state", "busy", "ev_t", "hpos", "heap", "steps", "outstanding", "n_run", "run", "n_wait",
    "w_head", "w_tail", "free", "preempts", "n_sched", "sched_q", "sched_new", "fed_mark",
    "fed_list",
    # prefix caching (tiny placeholders when it is off)
    "ref", "bkey", "keyed", "lru_prev", "lru_next", "lru_head", "lru_tail", "n_cached",
    "ustack", "n_unc", "ht_key", "ht_blk", "btab", "slot_stack", "n_slot"])
Glob = namedtuple("Glob", ["ist", "fst", "seed", "itl_counts", "bounds", "fin", "scratch"])
Log = namedtuple("Log", ["replica", "start_s", "end_s", "prefill_tokens", "decode_seqs",
                         "kv_tokens", "attn_pairs", "scheduled", "running", "waiting",
                         "blocks_used"])

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

_JIT = dict(cache=True, nogil=True, _nrt=False)   # no reference counting: nothing allocates
_NRT = dict(cache=True, nogil=True)                # the test helpers that return new arrays


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
    """``types.noise_factor`` for ``seed`` already reduced to uint64; bit for bit the same."""
    if cv == 0.0:
        return 1.0
    h = splitmix64(seed ^ splitmix64((np.uint64(replica) << _U32) ^ np.uint64(step)))
    h2 = splitmix64(h)
    u1 = float((h >> _U11) + _ONE) * _INV53
    u2 = float(h2 >> _U11) * _INV53
    z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    s2 = math.log1p(cv * cv)
    return math.exp(math.sqrt(s2) * z - s2 / 2.0)


@njit(**_NRT)
def noise_many(seed, replicas, steps, cv):
    """``noise_factor`` over arrays (for the bit-for-bit test)."""
    out = np.empty(len(replicas))
    for k in range(len(replicas)):
        out[k] = noise_factor(seed, replicas[k], steps[k], cv)
    return out


@njit(**_JIT)
def mean_ms(fst, p, d, k, a):
    """``StepModel.mean_ms`` in its evaluation order."""
    return (fst[F_C0] + fst[F_CP] * float(p) + fst[F_CD] * float(d) + fst[F_CKV] * float(k)
            + fst[F_CA] * float(a))


@njit(**_NRT)
def step_s_many(fst, seed, replicas, steps, p, d, k, a):
    """Step durations for given figures (for the bit-for-bit test)."""
    out = np.empty(len(p))
    for j in range(len(p)):
        out[j] = (mean_ms(fst, p[j], d[j], k[j], a[j]) / 1000.0
                  * noise_factor(seed, replicas[j], steps[j], fst[F_CV]))
    return out


# --------------------------------------------------------------------------- event heap
@njit(**_JIT)
def _less(ev_t, a, b):
    ta = ev_t[a]
    tb = ev_t[b]
    return ta < tb or (ta == tb and a < b)


@njit(**_JIT)
def _sift_up(P, k):
    heap = P.heap
    pos = P.hpos
    r = heap[k]
    while k > 0:
        p = (k - 1) >> 1
        q = heap[p]
        if _less(P.ev_t, r, q):
            heap[k] = q
            pos[q] = k
            k = p
        else:
            break
    heap[k] = r
    pos[r] = k
    return k


@njit(**_JIT)
def _sift_down(P, n, k):
    heap = P.heap
    pos = P.hpos
    r = heap[k]
    while True:
        c = 2 * k + 1
        if c >= n:
            break
        if c + 1 < n and _less(P.ev_t, heap[c + 1], heap[c]):
            c += 1
        q = heap[c]
        if _less(P.ev_t, q, r):
            heap[k] = q
            pos[q] = k
            k = c
        else:
            break
    heap[k] = r
    pos[r] = k


@njit(**_JIT)
def _set_event(P, G, r, t):
    P.ev_t[r] = t
    k = P.hpos[r]
    if k < 0:
        n = G.ist[I_HSIZE]
        P.heap[n] = r
        P.hpos[r] = n
        G.ist[I_HSIZE] = n + 1
        _sift_up(P, n)
    else:
        k = _sift_up(P, k)
        _sift_down(P, G.ist[I_HSIZE], k)


@njit(**_JIT)
def _remove_event(P, G, r):
    k = P.hpos[r]
    if k < 0:
        return
    n = G.ist[I_HSIZE] - 1
    G.ist[I_HSIZE] = n
    P.hpos[r] = -1
    if k < n:
        last = P.heap[n]
        P.heap[k] = last
        P.hpos[last] = k
        k = _sift_up(P, k)
        _sift_down(P, n, k)


# --------------------------------------------------------------------------- bookkeeping
@njit(**_JIT)
def _eligible(P, G, r):
    return P.state[r] == READY and P.outstanding[r] < G.ist[I_LIMIT]


@njit(**_JIT)
def _set_state(P, G, r, s):
    ist = G.ist
    old = P.state[r]
    e0 = _eligible(P, G, r)
    if old <= DRAINING:
        ist[I_NLIVE] -= 1
    if old == READY:
        ist[I_NREADY] -= 1
    P.state[r] = s
    if s <= DRAINING:
        ist[I_NLIVE] += 1
    if s == READY:
        ist[I_NREADY] += 1
    ist[I_NELIG] += int(_eligible(P, G, r)) - int(e0)


@njit(**_JIT)
def _out_add(P, G, r, d):
    e0 = _eligible(P, G, r)
    P.outstanding[r] += d
    G.ist[I_NELIG] += int(_eligible(P, G, r)) - int(e0)


@njit(**_JIT)
def recount_eligible(P, G):
    n = 0
    for r in range(G.ist[I_NREP]):
        if _eligible(P, G, r):
            n += 1
    G.ist[I_NELIG] = n


@njit(**_JIT)
def _finish(Q, G, i, outcome, t, counter):
    Q.outcome[i] = outcome
    Q.finish_s[i] = t
    G.ist[counter] += 1
    f = G.ist[I_FIN]
    G.fin[f] = i
    G.ist[I_FIN] = f + 1


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
            i = Q.nxt[i]
    _add_areas(G, t - t0, queue, system)
    fst[F_LAST_T] = t


@njit(**_JIT)
def _holds_nothing(P, r):
    return P.n_run[r] == 0 and P.n_wait[r] == 0


@njit(**_JIT)
def _wait_push_tail(Q, P, G, r, i):
    Q.nxt[i] = -1
    if P.n_wait[r] == 0:
        P.w_head[r] = i
    else:
        Q.nxt[P.w_tail[r]] = i
    P.w_tail[r] = i
    P.n_wait[r] += 1
    G.ist[I_WAIT_TOT] += 1


@njit(**_JIT)
def _wait_push_front(Q, P, G, r, i):
    if P.n_wait[r] == 0:
        Q.nxt[i] = -1
        P.w_tail[r] = i
    else:
        Q.nxt[i] = P.w_head[r]
    P.w_head[r] = i
    P.n_wait[r] += 1
    G.ist[I_WAIT_TOT] += 1


@njit(**_JIT)
def _wait_pop(Q, P, G, r):
    i = P.w_head[r]
    P.w_head[r] = Q.nxt[i]
    P.n_wait[r] -= 1
    G.ist[I_WAIT_TOT] -= 1
    return i


# --------------------------------------------------------------------------- prefix cache
@njit(**_JIT)
def _home(G, key):
    return np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(G.ist[I_HSHIFT]))


@njit(**_JIT)
def _ht_find(P, G, r, key):
    mask = G.ist[I_HMASK]
    s = _home(G, key)
    while True:
        b = P.ht_blk[r, s]
        if b < 0:
            return -1
        if P.ht_key[r, s] == key:
            return b
        s = (s + 1) & mask


@njit(**_JIT)
def _ht_insert(P, G, r, key, b):
    mask = G.ist[I_HMASK]
    s = _home(G, key)
    while P.ht_blk[r, s] >= 0:
        s = (s + 1) & mask
    P.ht_key[r, s] = key
    P.ht_blk[r, s] = b


@njit(**_JIT)
def _ht_delete(P, G, r, key):
    mask = G.ist[I_HMASK]
    s = _home(G, key)
    while P.ht_key[r, s] != key or P.ht_blk[r, s] < 0:
        s = (s + 1) & mask
    P.ht_blk[r, s] = -1
    j = s
    while True:          # backward shift: close the gap for entries probed past it
        j = (j + 1) & mask
        if P.ht_blk[r, j] < 0:
            return
        h = _home(G, P.ht_key[r, j])
        # the entry at j may move to s unless its home lies cyclically in (s, j]
        if s <= j:
            stay = s < h <= j
        else:
            stay = h > s or h <= j
        if not stay:
            P.ht_key[r, s] = P.ht_key[r, j]
            P.ht_blk[r, s] = P.ht_blk[r, j]
            P.ht_blk[r, j] = -1
            s = j


@njit(**_JIT)
def _lru_remove(P, r, b):
    p = P.lru_prev[r, b]
    n = P.lru_next[r, b]
    if p >= 0:
        P.lru_next[r, p] = n
    else:
        P.lru_head[r] = n
    if n >= 0:
        P.lru_prev[r, n] = p
    else:
        P.lru_tail[r] = p
    P.n_cached[r] -= 1


@njit(**_JIT)
def _lru_append(P, r, b):
    t = P.lru_tail[r]
    P.lru_prev[r, b] = t
    P.lru_next[r, b] = -1
    if t >= 0:
        P.lru_next[r, t] = b
    else:
        P.lru_head[r] = b
    P.lru_tail[r] = b
    P.n_cached[r] += 1


@njit(**_JIT)
def _take_new_block(P, G, r):
    if P.n_unc[r] > 0:
        P.n_unc[r] -= 1
        b = P.ustack[r, P.n_unc[r]]
    else:
        b = P.lru_head[r]
        _lru_remove(P, r, b)
        _ht_delete(P, G, r, P.bkey[r, b])
        P.keyed[r, b] = False
    P.ref[r, b] = 1
    P.free[r] -= 1
    G.ist[I_BLK_TOT] += 1
    return b


@njit(**_JIT)
def _lookup(Q, P, G, r, i, out):
    """Leading keys of ``i`` held on ``r``; their blocks into ``out`` when it is long enough."""
    off = Q.key_off[i]
    nk = Q.key_off[i + 1] - off
    j = 0
    while j < nk:
        b = _ht_find(P, G, r, Q.keys[off + j])
        if b < 0:
            break
        if j < len(out):
            out[j] = b
        j += 1
    return j


@njit(**_JIT)
def _free_blocks(Q, P, G, r, q):
    nb = Q.blocks[q]
    if G.ist[I_PREFIX]:
        s = Q.slot[q]
        for j in range(nb - 1, -1, -1):          # last block first
            b = P.btab[r, s, j]
            c = P.ref[r, b] - 1
            P.ref[r, b] = c
            if c == 0:
                if P.keyed[r, b]:
                    _lru_append(P, r, b)
                else:
                    P.ustack[r, P.n_unc[r]] = b
                    P.n_unc[r] += 1
                P.free[r] += 1
                G.ist[I_BLK_TOT] -= 1
        P.slot_stack[r, P.n_slot[r]] = s
        P.n_slot[r] += 1
        Q.slot[q] = -1
    else:
        P.free[r] += nb
        G.ist[I_BLK_TOT] -= nb
    Q.blocks[q] = 0


@njit(**_JIT)
def _key_blocks(Q, P, G, r, q, old, new):
    bs = G.ist[I_BS]
    off = Q.key_off[q]
    nk = Q.key_off[q + 1] - off
    j1 = min(new // bs, nk)
    s = Q.slot[q]
    for j in range(old // bs, j1):
        k = Q.keys[off + j]
        if _ht_find(P, G, r, k) < 0:
            b = P.btab[r, s, j]
            P.bkey[r, b] = k
            P.keyed[r, b] = True
            _ht_insert(P, G, r, k, b)


# --------------------------------------------------------------------------- routing
@njit(**_JIT)
def _route(Q, P, G, i):
    ist = G.ist
    nrep = ist[I_NREP]
    lim = ist[I_LIMIT]
    best = -1
    if ist[I_ROUTER] == 0:
        for r in range(nrep):
            if P.state[r] == READY and P.outstanding[r] < lim:
                if best < 0 or P.outstanding[r] < P.outstanding[best]:
                    best = r
        return best
    lo = NO_LIMIT
    for r in range(nrep):
        if P.state[r] == READY and P.outstanding[r] < lim and P.outstanding[r] < lo:
            lo = P.outstanding[r]
    bm = -1
    for r in range(nrep):
        o = P.outstanding[r]
        if P.state[r] == READY and o < lim and o <= lo + 4:
            m = _lookup(Q, P, G, r, i, G.scratch[:0]) if ist[I_PREFIX] else 0
            if m > bm or (m == bm and o < P.outstanding[best]):
                best = r
                bm = m
    return best


@njit(**_JIT)
def _purge(Q, G, t):
    ist = G.ist
    if not ist[I_HAS_TO]:
        return
    to = G.fst[F_TIMEOUT]
    while ist[I_QLEN] > 0:
        h = ist[I_QHEAD]
        if Q.arrival_s[h] + to <= t:
            ist[I_QHEAD] = Q.nxt[h]
            ist[I_QLEN] -= 1
            _finish(Q, G, h, TIMED_OUT, Q.arrival_s[h] + to, I_TIMEDOUT)
        else:
            break


@njit(**_JIT)
def _give(Q, P, G, r, i):
    _wait_push_tail(Q, P, G, r, i)
    Q.replica_of[i] = r
    _out_add(P, G, r, 1)


@njit(**_JIT)
def feed(Q, P, G, L, t):
    """Purge, route the queue's head while a replica is eligible, kick those fed."""
    ist = G.ist
    _purge(Q, G, t)
    nf = 0
    while ist[I_QLEN] > 0 and ist[I_NELIG] > 0:
        i = ist[I_QHEAD]
        ist[I_QHEAD] = Q.nxt[i]
        ist[I_QLEN] -= 1
        r = _route(Q, P, G, i)
        _give(Q, P, G, r, i)
        if not P.fed_mark[r]:
            P.fed_mark[r] = True
            P.fed_list[nf] = r
            nf += 1
    for k in range(nf):
        r = P.fed_list[k]
        P.fed_mark[r] = False
        kick(Q, P, G, L, r, t)


@njit(**_JIT)
def _arrival(Q, P, G, L, i, t):
    ist = G.ist
    ist[I_ARRIVED] += 1
    _purge(Q, G, t)
    if ist[I_QLEN] > 0 or ist[I_NELIG] == 0:
        if ist[I_MAXQ] >= 0 and ist[I_QLEN] >= ist[I_MAXQ]:
            _finish(Q, G, i, SHED, t, I_SHED)
        else:
            Q.nxt[i] = -1
            if ist[I_QLEN] == 0:
                ist[I_QHEAD] = i
            else:
                Q.nxt[ist[I_QTAIL]] = i
            ist[I_QTAIL] = i
            ist[I_QLEN] += 1
    else:
        r = _route(Q, P, G, i)
        _give(Q, P, G, r, i)
        kick(Q, P, G, L, r, t)


# --------------------------------------------------------------------------- one step
@njit(**_JIT)
def _preempt_last(Q, P, G, r):
    n = P.n_run[r] - 1
    v = P.run[r, n]
    P.n_run[r] = n
    G.ist[I_RUN_TOT] -= 1
    _free_blocks(Q, P, G, r, v)
    Q.computed[v] = 0
    _wait_push_front(Q, P, G, r, v)
    Q.preemptions[v] += 1
    P.preempts[r] += 1
    G.ist[I_PREEMPT] += 1
    return v


@njit(**_JIT)
def kick(Q, P, G, L, r, t):
    """Start a step on ``r`` at ``t`` if it is serving, idle and holds work."""
    s = P.state[r]
    if (s == READY or s == DRAINING) and not P.busy[r] and (P.n_run[r] > 0 or P.n_wait[r] > 0):
        _schedule(Q, P, G, L, r, t)


@njit(**_JIT)
def _schedule(Q, P, G, L, r, t):
    ist = G.ist
    bs = ist[I_BS]
    chunked = ist[I_CHUNK] != 0
    prefix = ist[I_PREFIX] != 0
    maxseq = ist[I_MAXSEQ]
    run = P.run
    while True:
        budget = ist[I_MNBT]
        preempted = False
        ns = 0
        # 1. running first, oldest admitted first
        k = 0
        while k < P.n_run[r]:
            q = run[r, k]
            nc = Q.computed[q]
            new = Q.prompt[q] + Q.generated[q] - nc
            if new > budget:
                if not chunked:
                    k += 1
                    continue
                new = budget
            if new == 0:
                k += 1
                continue
            need = (nc + new + bs - 1) // bs - Q.blocks[q]
            stop = False
            while need > P.free[r]:
                v = _preempt_last(Q, P, G, r)
                preempted = True
                if v == q:
                    stop = True
                    break
            if stop:
                break
            if need > 0:
                if prefix:
                    sl = Q.slot[q]
                    nb = Q.blocks[q]
                    for j in range(need):
                        P.btab[r, sl, nb + j] = _take_new_block(P, G, r)
                else:
                    P.free[r] -= need
                    ist[I_BLK_TOT] += need
                Q.blocks[q] += need
            P.sched_q[r, ns] = q
            P.sched_new[r, ns] = new
            ns += 1
            budget -= new
            k += 1
        # 2. waiting next, unless step 1 preempted
        if not preempted:
            while P.n_wait[r] > 0 and budget > 0 and P.n_run[r] < maxseq:
                w = P.w_head[r]
                ntok = Q.prompt[w] + Q.generated[w]
                hit = 0
                if prefix:
                    hit = _lookup(Q, P, G, r, w, G.scratch)
                    hit = min(hit, (ntok - 1) // bs)
                nc = hit * bs
                new = ntok - nc
                if new > budget:
                    if not chunked:
                        break
                    new = budget
                need = (nc + new + bs - 1) // bs - hit
                cached_hit = 0
                for j in range(hit):
                    if P.ref[r, G.scratch[j]] == 0:
                        cached_hit += 1
                if need > P.free[r] - cached_hit:
                    break
                _wait_pop(Q, P, G, r)
                Q.computed[w] = nc
                if prefix:
                    P.n_slot[r] -= 1
                    sl = P.slot_stack[r, P.n_slot[r]]
                    Q.slot[w] = sl
                    for j in range(hit):
                        b = G.scratch[j]
                        if P.ref[r, b] == 0:
                            _lru_remove(P, r, b)
                            P.free[r] -= 1
                            ist[I_BLK_TOT] += 1
                        P.ref[r, b] += 1
                        P.btab[r, sl, j] = b
                    for j in range(need):
                        P.btab[r, sl, hit + j] = _take_new_block(P, G, r)
                    ist[I_PQ] += ntok
                    ist[I_PH] += hit * bs
                else:
                    P.free[r] -= need
                    ist[I_BLK_TOT] += need
                Q.blocks[w] = hit + need
                n = P.n_run[r]
                run[r, n] = w
                P.n_run[r] = n + 1
                ist[I_RUN_TOT] += 1
                P.sched_q[r, ns] = w
                P.sched_new[r, ns] = new
                ns += 1
                budget -= new
                if math.isnan(Q.first_scheduled_s[w]):
                    Q.first_scheduled_s[w] = t
        # 3. nothing scheduled: fail a head that can never be admitted, or stay idle
        if ns == 0:
            if P.n_run[r] == 0 and P.n_wait[r] > 0:
                w = _wait_pop(Q, P, G, r)
                _finish(Q, G, w, FAILED, t, I_FAILED)
                _out_add(P, G, r, -1)
                if P.state[r] == DRAINING and _holds_nothing(P, r):
                    _set_state(P, G, r, STOPPED)
                continue
            return
        # 4. duration
        pt = 0
        dn = 0
        kv = 0
        ap = 0
        for j in range(ns):
            q = P.sched_q[r, j]
            new = P.sched_new[r, j]
            nc = Q.computed[q]
            g = Q.generated[q]
            if new == 1 and g >= 1 and nc == Q.prompt[q] + g - 1:
                dn += 1
            else:
                pt += new
                ap += new * (nc + new)
            kv += nc + new
        idx = P.steps[r]
        dur = mean_ms(G.fst, pt, dn, kv, ap) / 1000.0 * noise_factor(
            G.seed[0], r, idx, G.fst[F_CV])
        P.steps[r] = idx + 1
        ist[I_STEPS] += 1
        P.n_sched[r] = ns
        P.busy[r] = True
        ist[I_NBUSY] += 1
        t_end = t + dur
        _set_event(P, G, r, t_end)
        if ist[I_REC]:
            m = ist[I_LOG]
            L.replica[m] = r
            L.start_s[m] = t
            L.end_s[m] = t_end
            L.prefill_tokens[m] = pt
            L.decode_seqs[m] = dn
            L.kv_tokens[m] = kv
            L.attn_pairs[m] = ap
            L.scheduled[m] = ns
            L.running[m] = P.n_run[r]
            L.waiting[m] = P.n_wait[r]
            L.blocks_used[m] = ist[I_NB] - P.free[r]
            ist[I_LOG] = m + 1
        return


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


@njit(**_JIT)
def _step_end(Q, P, G, L, r, t):
    ist = G.ist
    fst = G.fst
    prefix = ist[I_PREFIX] != 0
    P.busy[r] = False
    ist[I_NBUSY] -= 1
    ns = P.n_sched[r]
    done = 0
    for k in range(ns):
        q = P.sched_q[r, k]
        old = Q.computed[q]
        c = old + P.sched_new[r, k]
        Q.computed[q] = c
        if prefix:
            _key_blocks(Q, P, G, r, q, old, c)
        g = Q.generated[q]
        if c == Q.prompt[q] + g:
            if g == 0:
                Q.first_token_s[q] = t
                ist[I_PROMPT] += Q.prompt[q]
            else:
                gap = t - Q.last_token_s[q]
                if gap == fst[F_LAST_GAP]:
                    b = ist[I_GAP_IDX]
                else:
                    b = _itl_bucket(G.bounds, gap)
                    fst[F_LAST_GAP] = gap
                    ist[I_GAP_IDX] = b
                G.itl_counts[b] += 1
                fst[F_ITL_SUM] += gap
                ist[I_ITLC] += 1
            g += 1
            Q.generated[q] = g
            ist[I_OUTPUT] += 1
            Q.last_token_s[q] = t
            if g == Q.output[q]:
                _finish(Q, G, q, SERVED, t, I_SERVED)
                _free_blocks(Q, P, G, r, q)
                _out_add(P, G, r, -1)
                done += 1
    P.n_sched[r] = 0
    if done:
        n = P.n_run[r]
        m = 0
        for k in range(n):
            q = P.run[r, k]
            if Q.outcome[q] == PENDING:
                P.run[r, m] = q
                m += 1
        P.n_run[r] = m
        ist[I_RUN_TOT] -= n - m
    feed(Q, P, G, L, t)
    if P.state[r] == DRAINING and _holds_nothing(P, r):
        _set_state(P, G, r, STOPPED)
    else:
        kick(Q, P, G, L, r, t)


# --------------------------------------------------------------------------- entry points
@njit(**_JIT)
def advance(Q, P, G, L, until):
    """Process every event with time <= ``until``; 1 when the step log must grow first."""
    ist = G.ist
    n = len(Q.arrival_s)
    arr = Q.arrival_s
    while True:
        if ist[I_REC] and ist[I_LOGCAP] - ist[I_LOG] < ist[I_NREP] + 2:
            return 1
        ai = ist[I_AI]
        if ist[I_HSIZE] > 0:
            r = P.heap[0]
            te = P.ev_t[r]
            if ai >= n or te <= arr[ai]:
                if te > until:
                    break
                _integrate(Q, G, te)
                if P.state[r] == STARTING:
                    _set_state(P, G, r, READY)
                    feed(Q, P, G, L, te)
                else:
                    _step_end(Q, P, G, L, r, te)
                if not P.busy[r]:
                    _remove_event(P, G, r)
                continue
        if ai >= n or arr[ai] > until:
            break
        ta = arr[ai]
        _integrate(Q, G, ta)
        ist[I_AI] = ai + 1
        _arrival(Q, P, G, L, ai, ta)
    _integrate(Q, G, until)
    _purge(Q, G, until)
    G.fst[F_NOW] = until
    return 0


@njit(**_JIT)
def add_replica(Q, P, G, L, r, ready_at_s):
    """Replica ``r`` (the next id; its rows already reset): READY now and fed, or STARTING."""
    ist = G.ist
    now = G.fst[F_NOW]
    ist[I_NREP] = r + 1
    P.state[r] = STOPPED
    if ready_at_s <= now:
        _set_state(P, G, r, READY)
        feed(Q, P, G, L, now)
    else:
        _set_state(P, G, r, STARTING)
        _set_event(P, G, r, ready_at_s)


@njit(**_JIT)
def remove_replica(P, G, r):
    s = P.state[r]
    if s == STARTING:
        _remove_event(P, G, r)
        _set_state(P, G, r, STOPPED)
    elif s == READY:
        _set_state(P, G, r, STOPPED if _holds_nothing(P, r) else DRAINING)


@njit(**_JIT)
def set_limit(Q, P, G, L, limit):
    G.ist[I_LIMIT] = limit
    recount_eligible(P, G)
    feed(Q, P, G, L, G.fst[F_NOW])


@njit(**_JIT)
def set_queue_timeout(Q, G, has, t_s):
    G.ist[I_HAS_TO] = has
    G.fst[F_TIMEOUT] = t_s
    _purge(Q, G, G.fst[F_NOW])
