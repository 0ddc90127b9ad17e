"""The live loop on one machine: a real Ray Serve model, the sidecar, Prometheus, the controller."""
