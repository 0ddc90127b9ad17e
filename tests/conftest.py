"""Fixtures shared by every test area: free loopback ports and the Debian binaries."""
from __future__ import annotations

from pathlib import Path

import pytest

from trimtab.common.ports import free_port
from trimtab.common.prometheus import find_binary

REPO_ROOT = Path(__file__).resolve().parent.parent
TRACES_DIR = REPO_ROOT / "sim/data/traces"


__all__ = ["REPO_ROOT", "TRACES_DIR", "free_port", "require_binary"]   # free_port: re-exported


def require_binary(name: str) -> str:
    """Path of a Debian-packaged binary; `make test` installs them, so absence is an error."""
    path = find_binary(name)
    if path is None:
        pytest.fail(f"{name} not found: run `make test`, which installs the Debian packages")
    return path


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
