"""The simulated fleet: router, replicas with dynamic batchers, service-time and memory models."""
from trimtab.sim.fleet.model import Fleet, FleetConfig, MemoryModel, WindowStats
from trimtab.sim.fleet.service import AffineService, ProfileService, ProfileTable, load_profile

__all__ = ["Fleet", "FleetConfig", "MemoryModel", "WindowStats", "AffineService",
           "ProfileService", "ProfileTable", "load_profile"]
