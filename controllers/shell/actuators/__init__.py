"""Actuators: apply a Decision to a workload (Kubernetes scale, sidecar settings, Ray Serve, gate)."""
