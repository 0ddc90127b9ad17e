"""The sidecar actuator finds pods through the stand-in and PUTs settings to real `trimtab sidecar` processes."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from trimtab.controllers.shell.actuators.base import ActuationError, WorkloadRef
from trimtab.controllers.shell.actuators.sidecar import SidecarActuator, SidecarEndpoint
from tests.support.kube_standin import KubeStandIn
from trimtab.controllers.core.types import Decision
from tests.conftest import REPO_ROOT, free_port
from trimtab.common.process import stop_all

TOKEN = "s3cret-token"
LLAMA = WorkloadRef("Deployment", "prod", "llama")


def _settings(port: int) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/control/v1/settings",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=2) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def sidecars(tmp_path_factory) -> Iterator[list[int]]:
    """Three real sidecars (fake GPU, no proxy), each with the control API on its own port."""
    tmp = tmp_path_factory.mktemp("sidecars")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    procs, ports = [], []
    try:
        for i in range(3):
            port = free_port()
            procs.append(subprocess.Popen(
                [str(REPO_ROOT / ".venv/bin/trimtab"), "sidecar", "--gpu", "fake",
                 "--upstream", "http://127.0.0.1:9", "--metrics-port", str(port),
                 "--control-token-file", str(token_file)],
                stdout=subprocess.DEVNULL, stderr=(tmp / f"sidecar{i}.log").open("w")))
            ports.append(port)
        deadline = time.monotonic() + 30
        for port in ports:
            while True:
                try:
                    _settings(port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        yield ports
    finally:
        stop_all(procs)


@pytest.fixture
def setup(standin: KubeStandIn, kube_api, tmp_path: Path, sidecars):
    standin.add_deployment("prod", "llama", replicas=2)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    act = SidecarActuator(kube_api, {LLAMA.key: SidecarEndpoint(str(token_file), timeout_s=1.0)})
    return standin, act, sidecars, token_file


def knobs(batch: int, limit: int = 8) -> Decision:
    return Decision(replicas=2, reason="steady", max_batch_size=batch, concurrency_limit=limit)


def test_puts_settings_to_every_ready_pod_of_the_workload(setup) -> None:
    standin, act, ports, _ = setup
    standin.add_pod("prod", "llama-a", {"app": "llama"}, admin_port=ports[0])
    standin.add_pod("prod", "llama-b", {"app": "llama"}, admin_port=ports[1])
    standin.add_pod("prod", "other", {"app": "other"}, admin_port=ports[2])
    standin.add_pod("prod", "llama-pending", {"app": "llama"}, admin_port=ports[2],
                    phase="Pending", ready=False)
    before = _settings(ports[2])
    applied = act.apply(LLAMA, knobs(32, 12), "scale_up")
    assert set(applied.changes) == {"pod/llama-a", "pod/llama-b"}
    for port in ports[:2]:
        s = _settings(port)
        assert (s["max_batch_size"], s["concurrency_limit"]) == (32, 12)
        assert s["batch_timeout_ms"] == before["batch_timeout_ms"]   # untouched knob kept
    assert _settings(ports[2]) == before       # other workload and not-ready pod untouched
    # Nothing changed since: no pod is written again.
    assert act.apply(LLAMA, knobs(32, 12), "steady").changes == {}


def test_a_pod_that_starts_later_gets_the_current_settings(setup) -> None:
    standin, act, ports, _ = setup
    standin.add_pod("prod", "llama-a", {"app": "llama"}, admin_port=ports[0])
    act.apply(LLAMA, knobs(24), "scale_up")
    standin.add_pod("prod", "llama-new", {"app": "llama"}, admin_port=ports[1])
    # Held (no new decision): resync alone brings the new pod to what is in force.
    assert set(act.resync(LLAMA).changes) == {"pod/llama-new"}
    assert _settings(ports[1])["max_batch_size"] == 24


def test_a_failing_pod_is_reported_and_never_blocks_the_others(setup) -> None:
    standin, act, ports, _ = setup
    dead_port = free_port()
    standin.add_pod("prod", "llama-dead", {"app": "llama"}, admin_port=dead_port)
    standin.add_pod("prod", "llama-a", {"app": "llama"}, admin_port=ports[0])
    standin.add_pod("prod", "llama-b", {"app": "llama"}, admin_port=ports[1])
    with pytest.raises(ActuationError) as err:
        act.apply(LLAMA, knobs(48), "scale_up")
    assert err.value.error == "sidecar_unreachable" and "llama-dead" in str(err.value)
    assert [_settings(p)["max_batch_size"] for p in ports[:2]] == [48, 48]
    assert set(act.failed) == {"llama-dead"}
    # The pod comes back (now served by the third sidecar): the retry reaches it.
    standin.remove("pods", "prod", "llama-dead")
    standin.add_pod("prod", "llama-dead", {"app": "llama"}, admin_port=ports[2])
    assert set(act.apply(LLAMA, knobs(48), "steady").changes) == {"pod/llama-dead"}
    assert _settings(ports[2])["max_batch_size"] == 48 and act.failed == {}


def test_a_wrong_token_is_a_reported_401(setup) -> None:
    standin, act, ports, token_file = setup
    token_file.write_text("wrong")
    standin.add_pod("prod", "llama-a", {"app": "llama"}, admin_port=ports[0])
    with pytest.raises(ActuationError) as err:
        act.apply(LLAMA, knobs(4), "scale_up")
    assert err.value.error == "sidecar_error" and "http_401" in str(err.value)
