"""``trimtab policies``: every registered name, each with where it applies."""
from __future__ import annotations

from typer.testing import CliRunner

from trimtab.cli import app
from trimtab.controllers.core import registry


def test_lists_every_policy_name_with_its_kind():
    out = CliRunner().invoke(app, ["policies"])
    assert out.exit_code == 0, out.output
    rows = dict(line.split(None, 1) for line in out.output.splitlines())
    assert set(rows) == set(registry.known_policies())
    assert rows["keda-vllm"] == "llm fleets" and rows["hpa"] == "any fleet"
    assert rows["oracle"] == "replay only"
    assert rows["dynamo"] == "llm fleets, replay only"
    for name in ("aibrix-kpa", "aibrix-apa", "wva", "trimtab", "keda", "kpa", "ray", "static"):
        assert name in rows
