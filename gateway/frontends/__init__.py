"""The doors: each protocol parses its requests, calls the protocol-neutral core and converts the
result back. ``grpc/`` and ``http/`` hold one module per protocol; ``wire_codes`` is the one table
that maps the core's error kinds onto gRPC codes and HTTP statuses."""
