"""Metric sources: read what the collectors export and assemble one Snapshot per target."""
