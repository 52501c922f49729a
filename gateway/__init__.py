"""Taskgate gateway: frontends, settings, tasks, registry and errors."""

__version__ = "0.1.0"
