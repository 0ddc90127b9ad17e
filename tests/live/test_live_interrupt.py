"""Ctrl-C during ``trimtab up``: every process it started (Ray, sidecar, Prometheus) is gone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, require_binary

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigint_mid_run_stops_everything(tmp_path):
    require_binary("prometheus")
    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trimtab.cli", "up", "--duration", "120", "--no-view",
         "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    started: set[int] = set()
    try:
        deadline_s = time.monotonic() + 180
        while time.monotonic() < deadline_s and proc.poll() is None:
            if b"starting Prometheus" in (tmp_path / "up.log").read_bytes():
                break
            time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
        time.sleep(8.0)                       # into the load phase, the controller ticking
        started = descendants(proc.pid)
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in started if alive(p)}
        assert any("prometheus" in n for n in names), names
        assert any(n.startswith("raylet") or n.startswith("gcs_server") for n in names), names
        proc.send_signal(signal.SIGINT)       # to the main process only, as a test of cleanup
        assert proc.wait(120) == 130
        leftover = {p for p in started if alive(p)}
        deadline_s = time.monotonic() + 10
        while leftover and time.monotonic() < deadline_s:
            time.sleep(0.5)
            leftover = {p for p in leftover if alive(p)}
        assert not leftover, [Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in leftover]
        assert b"everything started was stopped" in (tmp_path / "up.log").read_bytes()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for p in started:
            if alive(p):
                os.kill(p, signal.SIGKILL)
        log.close()


def test_an_interrupt_a_library_swallowed_is_still_remembered():
    """The handler raises KeyboardInterrupt and keeps a flag the load loop checks, so a
    library call that catches BaseException does not turn Ctrl-C into a full run."""
    from trimtab.up import run as live_run

    live_run.INTERRUPTED.clear()
    try:
        try:
            live_run.interrupt_on_signal(signal.SIGINT, None)
        except BaseException:      # what a careless library does with it
            pass
        assert live_run.INTERRUPTED.is_set()
    finally:
        live_run.INTERRUPTED.clear()
