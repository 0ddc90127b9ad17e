"""Child processes we start: wait until one answers over HTTP, stop them (SIGTERM, then SIGKILL)."""
from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def log_tail(path: Path | None, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' when there is none yet)."""
    if path is None or not Path(path).exists():
        return ""
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def wait_http_ok(url: str, proc: subprocess.Popen, timeout_s: float = 30.0,
                 log_path: Path | None = None, what: str = "process",
                 poll_s: float = 0.2) -> None:
    """Poll ``url`` until it answers 200; RuntimeError with the log's tail if ``proc`` exits,
    TimeoutError if it does not answer within ``timeout_s``."""
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before {url} answered; "
                               f"log {log_path}:\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"{what} did not answer {url} within {timeout_s:g} s; log {log_path}:\n"
                       f"{log_tail(log_path)}")


def stop_all(procs: "list[subprocess.Popen]", grace_s: float = 10.0) -> None:
    """``stop_process`` for many at once: SIGTERM them all first, so their exits overlap."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        stop_process(proc, grace_s)


def stop_process(proc: subprocess.Popen | None, grace_s: float = 10.0) -> None:
    """SIGTERM a child we started, then SIGKILL it if it has not exited within ``grace_s``."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
