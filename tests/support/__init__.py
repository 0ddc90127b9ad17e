"""Test-only stand-ins (not installed): the loopback Kubernetes API stand-in."""
