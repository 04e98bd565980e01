"""wgmesh: a WireGuard mesh manager for interconnecting cloud networks."""

__version__ = "0.1.0"
