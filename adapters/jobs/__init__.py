"""Tuning jobs: the persistent job store, the queue and the worker processes."""
