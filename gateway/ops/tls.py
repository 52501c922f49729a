"""TLS for both servers from the settings: HTTPS (uvicorn) and gRPC over TLS on the same ports,
with client certificates required and checked against a CA when ``tls_client_ca_file`` is set
(mTLS). The files are read once, at start-up; a new certificate takes a restart. The ModelMesh
endpoint (a pod-local port or unix socket) stays plain.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.settings import ServerSettings

if TYPE_CHECKING:
    import grpc


def enabled(settings: ServerSettings) -> bool:
    return bool(settings.tls_cert_file)


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """``uvicorn.Config`` keywords: none without TLS."""
    if not enabled(settings):
        return {}
    options: dict[str, Any] = {"ssl_certfile": settings.tls_cert_file, "ssl_keyfile": settings.tls_key_file}
    if settings.tls_client_ca_file:
        options["ssl_ca_certs"] = settings.tls_client_ca_file
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def grpc_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """The gRPC server's credentials; None without TLS (an insecure port)."""
    if not enabled(settings):
        return None
    import grpc

    key = Path(settings.tls_key_file).read_bytes()
    chain = Path(settings.tls_cert_file).read_bytes()
    client_ca = Path(settings.tls_client_ca_file).read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
