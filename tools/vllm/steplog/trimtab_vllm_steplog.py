"""A vLLM general plugin: one JSON line per engine step, when TRIMTAB_VLLM_STEP_LOG names a file.

Installed into the vLLM venv only (tools/vllm/setup.sh); trimtab itself never imports vLLM.
vLLM loads general plugins in every process; this one patches the V1 engine core's
``EngineCore.step`` and ``Scheduler.schedule`` (engine-core process) and writes, per step that
scheduled tokens: ``t0``/``t1`` (time.monotonic, seconds: step start, outputs ready), ``ts``
(scheduling done), the step's composition in the terms of trimtab's StepModel (``P`` prefill
tokens, ``D`` decode sequences, ``K`` KV tokens attended, ``A`` prefill attention pairs, ``n``
sequences scheduled), ``run``/``wait`` right after scheduling, ``pre`` (preemptions in this
step) and ``ft`` (the ids of the requests whose first token this step made). Per request it
writes ``{"recv": t, "id": ...}`` when the engine core's input thread receives it
(``preprocess_add_request``) and ``{"add": t, "id": ...}`` when the busy loop hands it to the
scheduler between two steps (``add_request``). CLOCK_MONOTONIC is shared by all processes,
so these times line up with the client's clock.
"""
from __future__ import annotations

import json
import os
import threading
import time

_STATE = {"file": None, "pending": None, "preempted": 0}
_LOCK = threading.Lock()            # the input thread writes too


def _write(doc: dict) -> None:
    line = json.dumps(doc, separators=(",", ":")) + "\n"
    with _LOCK:
        f = _STATE["file"]
        if f is None:
            f = open(os.environ["TRIMTAB_VLLM_STEP_LOG"], "a", buffering=1 << 16)
            _STATE["file"] = f
        f.write(line)
        f.flush()


def _patch_scheduler() -> None:
    from vllm.v1.core.sched.scheduler import Scheduler

    if getattr(Scheduler, "_trimtab_patched", False):
        return
    orig_schedule = Scheduler.schedule
    orig_preempt = Scheduler._preempt_request

    def schedule(self, *args, **kwargs):
        _STATE["preempted"] = 0
        out = orig_schedule(self, *args, **kwargs)
        p = d = k = a = 0
        fresh = []
        for req_id, new in out.num_scheduled_tokens.items():
            req = self.requests[req_id]
            before = req.num_computed_tokens - new          # advanced inside schedule()
            if req.num_output_tokens == 0:
                fresh.append(req)
            ctx = before + new
            k += ctx
            if new == 1 and req.num_output_tokens >= 1 and before == req.num_tokens - 1:
                d += 1
            else:
                p += new
                a += new * ctx
        _STATE["pending"] = {"ts": time.monotonic(), "P": p, "D": d, "K": k, "A": a,
                             "n": len(out.num_scheduled_tokens), "run": len(self.running),
                             "wait": len(self.waiting), "pre": _STATE["preempted"],
                             "_fresh": fresh}
        return out

    def preempt(self, *args, **kwargs):
        _STATE["preempted"] += 1
        return orig_preempt(self, *args, **kwargs)

    Scheduler.schedule = schedule
    Scheduler._preempt_request = preempt
    Scheduler._trimtab_patched = True


def _patch_engine() -> None:
    from vllm.v1.engine.core import EngineCore

    if getattr(EngineCore, "_trimtab_patched", False):
        return
    orig_step = EngineCore.step

    def step(self, *args, **kwargs):
        _STATE["pending"] = None
        t0 = time.monotonic()
        result = orig_step(self, *args, **kwargs)
        t1 = time.monotonic()
        rec = _STATE["pending"]
        if rec is not None and rec["n"] > 0:
            rec["t0"] = t0
            rec["t1"] = t1
            rec["ft"] = [r.request_id for r in rec.pop("_fresh") if r.num_output_tokens > 0]
            _write(rec)
        return result

    orig_add = EngineCore.add_request
    orig_pre = EngineCore.preprocess_add_request

    def add_request(self, request, *args, **kwargs):
        _write({"add": time.monotonic(), "id": request.request_id})
        return orig_add(self, request, *args, **kwargs)

    def preprocess_add_request(self, request, *args, **kwargs):
        t = time.monotonic()
        out = orig_pre(self, request, *args, **kwargs)
        _write({"recv": t, "id": out[0].request_id})
        return out

    EngineCore.step = step
    EngineCore.add_request = add_request
    EngineCore.preprocess_add_request = preprocess_add_request
    EngineCore._trimtab_patched = True


def register() -> None:
    """The entry point vLLM calls in each process; a no-op unless the env var is set."""
    if not os.environ.get("TRIMTAB_VLLM_STEP_LOG"):
        return
    _patch_scheduler()
    _patch_engine()
