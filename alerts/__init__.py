"""Prometheus recording and alerting rules and Alertmanager routing, generated as code."""
