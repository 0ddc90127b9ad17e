"""Each baseline's main target swept across a range wide enough to bracket the cheapest
setting that meets the SLO (``trimtab replay --sweep`` runs these)."""
from __future__ import annotations

# HPA: in-flight requests per pod; KEDA: requests per second per replica (the Prometheus
# rate query's threshold); KPA: target concurrency per pod (before its 70 % utilisation);
# Ray Serve: target ongoing requests per replica. Seven settings each keep a full sweep of
# one scenario to about thirty replays.
_HPA_TARGETS = (2, 4, 6, 8, 10, 12, 16)
_KEDA_THRESHOLDS = (5, 10, 15, 20, 30, 40, 60)
_KPA_TARGETS = (4, 8, 12, 16, 24, 32, 48)
_RAY_TARGETS = (1, 2, 4, 6, 8, 12, 16)
# keda-vllm: vLLM's waiting requests per replica (KServe's target value, default 2).
_KEDA_VLLM_THRESHOLDS = (0.5, 1, 2, 4, 8, 16, 32)
# aibrix-kpa / aibrix-apa: KV-cache usage per pod (targetValue, default 0.5).
_AIBRIX_TARGETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
# wva: the KV-cache usage at which a pod counts as saturated (kvCacheThreshold, default 0.8).
_WVA_KV_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# dynamo: the ITL target the planner sizes an engine for, ms (the scenario's TPOT bound by
# default); a tighter one leaves headroom the planner's means do not.
_DYNAMO_ITL_MS = (25, 50, 75, 100, 125, 150, 200)

SWEEPS: dict[str, list[str]] = {
    "hpa": [f"hpa:target={t}" for t in _HPA_TARGETS],
    "keda": [f"keda:threshold={t}" for t in _KEDA_THRESHOLDS],
    "kpa": [f"kpa:target={t}" for t in _KPA_TARGETS],
    "ray": [f"ray:target_ongoing_requests={t}" for t in _RAY_TARGETS],
    "keda-vllm": [f"keda-vllm:threshold={t}" for t in _KEDA_VLLM_THRESHOLDS],
    "aibrix-kpa": [f"aibrix-kpa:target={t}" for t in _AIBRIX_TARGETS],
    "aibrix-apa": [f"aibrix-apa:target={t}" for t in _AIBRIX_TARGETS],
    "wva": [f"wva:kv_cache_threshold={t}" for t in _WVA_KV_THRESHOLDS],
    "dynamo": [f"dynamo:itl_ms={t}" for t in _DYNAMO_ITL_MS],
}
