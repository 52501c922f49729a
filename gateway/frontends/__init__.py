"""The doors: each protocol parses its requests, calls the protocol-neutral core and converts the
result back. ``grpc/`` and ``http/`` hold one module per protocol; ``wire_codes`` is the one table
that maps the core's error kinds onto gRPC codes and HTTP statuses.

kserve's ``model_server`` module parses ``sys.argv`` with argparse when it is imported (and exits
on a value it cannot parse). The KServe v2 door imports kserve's protocol types, which imports
that module, so it is imported here first with an empty argument list: the gateway's own command
line is never read by kserve.
"""

import sys


def _import_kserve_without_argv() -> None:
    if "kserve.model_server" in sys.modules:
        return
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve.model_server  # noqa: F401
    finally:
        sys.argv = saved


_import_kserve_without_argv()
