"""The fault soak (trimtab.up.soak) on a short schedule: the whole live loop, one fault at a time.

Ray phase: Ray Serve + the sidecar + Prometheus + the controller (Ray Serve and sidecar
actuators) under steady load; Prometheus killed and restarted, the sidecar terminated and
restarted, a replica killed, Ray Serve's HTTP proxy stopped (the upstream hung), the in-flight
metric answered NaN. Kubernetes phase: the real kube-apiserver and the Kubernetes actuator,
the client's HTTP layer answering 409, 429 and 500 in turn.
"""
from __future__ import annotations

import pytest

from trimtab.up.soak import BASELINE, RAY_FAULTS, SoakConfig, table

# The controller's pace in the Ray phase (trimtab up's LiveConfig defaults).
INTERVAL_S = 3.0
WINDOW_S = 5.0            # the rate window of the Prometheus queries
RAY_SCRAPE_S = 2.0        # Prometheus scrapes Ray's metrics agent every 2 s, Ray reports every 2 s
# After a fault ends, fresh data needs the rate window refilled (5 s) with samples that Ray
# reports and Prometheus scrapes (2 + 2 s), then a tick to read it: that tick may have just
# missed (one interval) and the first after can still see a partial window (two more), so
# 5 + 4 + 3 * 3 = 18 s; times 1.5 for two loaded cores: 27 s. Each fault's slot leaves that.
RECOVER_BOUND_S = 1.5 * (WINDOW_S + 2 * RAY_SCRAPE_S + 3 * INTERVAL_S)
FAULT_S = 4.0
SETTLE_S = 25.0
DURATION_S = SETTLE_S + len(RAY_FAULTS) * (FAULT_S + RECOVER_BOUND_S + 1.0)


@pytest.fixture(scope="module")
def ray_soak():
    from tests.conftest import require_binary

    require_binary("prometheus")
    from trimtab.up.soak import ray_phase

    cfg = SoakConfig(duration_s=DURATION_S, settle_s=SETTLE_S, fault_s=FAULT_S,
                     interval_s=INTERVAL_S)
    assert cfg.slot_s() >= FAULT_S + RECOVER_BOUND_S
    result = ray_phase(cfg)
    from rich.console import Console
    Console(width=200).print(table(result.rows, "fault soak (test), Ray phase"))
    return result


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(480)
def test_no_wrong_scale_down_no_lost_request_every_fault_recovered(ray_soak) -> None:
    rows = {r.fault: r for r in ray_soak.rows}
    assert not ray_soak.errors, ray_soak.errors              # every fault was injected
    assert list(rows) == [BASELINE, *RAY_FAULTS]
    for r in rows.values():
        assert r.wrong_scale_downs == 0, r
        assert r.lost == 0, r
    for name in RAY_FAULTS:
        r = rows[name]
        assert r.recover_s is not None and r.recover_s <= RECOVER_BOUND_S, r
        if name != "sidecar_kill":      # the load reaches the sidecar; only its restart refuses
            assert r.refused == 0, r
    # The faults were felt: the loop held while Prometheus was down and while a metric was NaN.
    assert rows["prometheus_kill"].unhealthy_ticks >= 1
    assert rows["metric_nan"].unhealthy_ticks >= 1
    assert rows[BASELINE].refused == 0 and rows[BASELINE].error_answers == 0
    assert ray_soak.requests.get("ok", 0) > 0.9 * sum(ray_soak.requests.values())


# -- the Kubernetes phase ------------------------------------------------------------------
from tests.production.kube_real import real_kube  # noqa: E402,F401  (fixture)

KUBE_INTERVAL_S = 1.0
KUBE_FAULT_S = 6.0
# The loop backs off in loop time after repeated failures: after n in a row it skips
# 2**(n-1) - 0.5 intervals, so the last wait before the first retry after a fault of F s is at
# most about F + 1 interval; the retry tick then succeeds. Bound: F + 3 intervals.
KUBE_RECOVER_BOUND_S = KUBE_FAULT_S + 3 * KUBE_INTERVAL_S


@pytest.mark.kube
@pytest.mark.timeout(240)
def test_api_server_faults_cause_no_wrong_scale_down_and_the_loop_recovers(real_kube) -> None:
    from trimtab.up.soak_kube import KUBE_FAULTS, KubeSoakConfig, kube_phase

    cfg = KubeSoakConfig(interval_s=KUBE_INTERVAL_S, fault_s=KUBE_FAULT_S,
                         slot_s=KUBE_FAULT_S + KUBE_RECOVER_BOUND_S + 4.0)
    result = kube_phase(str(real_kube.kubeconfig), cfg)
    rows = {r.fault: r for r in result.rows}
    assert list(rows) == [BASELINE, *KUBE_FAULTS]
    assert result.requests["injected_answers"] >= len(KUBE_FAULTS)
    # The square wave makes the loop write up and down all along: scale-downs did happen.
    assert sum(r.scale_downs for r in rows.values()) >= 2
    for name in KUBE_FAULTS:
        r = rows[name]
        assert r.wrong_scale_downs == 0, r
        assert r.unhealthy_ticks >= 1, r          # the failed writes were seen as errors
        assert r.recover_s is not None and r.recover_s <= KUBE_RECOVER_BOUND_S, r
