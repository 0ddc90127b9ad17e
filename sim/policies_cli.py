"""The ``trimtab policies`` command: every policy name, and where each applies."""
from __future__ import annotations

import typer


def policy_rows() -> list[tuple[str, str]]:
    """(name, where it applies) for every registered policy, live and replay-only, sorted."""
    import trimtab.sim.llm.dynamo_profile  # noqa: F401  (registers "dynamo")
    import trimtab.sim.replay  # noqa: F401  (registers the replay-only policies)
    from trimtab.controllers.core import registry

    registry.load_builtin_policies()
    rows = []
    for name in registry.known_policies():
        if name in registry.LLM_ONLY:
            kind = ("llm fleets, replay only" if name not in registry.POLICIES
                    else "llm fleets")
        elif name in registry.REPLAY_POLICIES and name not in registry.POLICIES:
            kind = "replay only"
        else:
            kind = "any fleet"
        rows.append((name, kind))
    return rows


def register(app: typer.Typer) -> None:
    @app.command("policies")
    def policies() -> None:
        """List every policy name (for --policy and the controller's config), and where each
        applies: any fleet, LLM fleets only (service model llm), or replays only."""
        width = max(len(n) for n, _ in policy_rows())
        for name, kind in policy_rows():
            typer.echo(f"{name:<{width}}  {kind}")
