"""The sidecar: GPU, queue and latency metrics, adapters, admission proxy and control API."""
