"""Text generation: parameters, continuous-batching scheduler and the protocol-neutral service.

Importing this package does not import torch; the scheduler thread does, when it starts.
"""
