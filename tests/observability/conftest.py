"""Fixtures of the observability tests (defined in support.py): process starter and webhook sink."""
from tests.observability.support import procs, webhook  # noqa: F401 (pytest fixtures)
