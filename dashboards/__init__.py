"""Grafana dashboards as code (grafana-foundation-sdk), generated JSON committed beside it."""
