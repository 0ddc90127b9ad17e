"""Fixtures shared by every test area: free loopback ports and the Debian binaries."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TRACES_DIR = REPO_ROOT / "sim/data/traces"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary(name: str) -> str:
    """Path of a Debian-packaged binary; `make test` installs them, so absence is an error."""
    for candidate in (shutil.which(name), f"/usr/bin/{name}", f"/usr/sbin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail(f"{name} not found: run `make test`, which installs the Debian packages")


@pytest.fixture
def port() -> int:
    return free_port()


# Hypothesis: no per-example deadline (these machines are shared and noisy, and a deadline
# there fails tests for timing, not correctness); in CI, derandomised so a run is repeatable.
import os  # noqa: E402

from hypothesis import settings  # noqa: E402

settings.register_profile("trimtab", deadline=None, derandomize=bool(os.environ.get("CI")),
                          print_blob=True)
settings.load_profile("trimtab")
