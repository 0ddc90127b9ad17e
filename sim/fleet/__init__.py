"""The simulated fleet: router, replicas with dynamic batchers, service-time and memory models."""
from sim.fleet.model import Fleet, FleetConfig, MemoryModel, WindowStats
from sim.fleet.service import AffineService, ProfileService, ProfileTable, load_profile

__all__ = ["Fleet", "FleetConfig", "MemoryModel", "WindowStats", "AffineService",
           "ProfileService", "ProfileTable", "load_profile"]
