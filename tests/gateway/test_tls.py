"""TLS on both servers with certificates the test makes (a CA, a server certificate for
127.0.0.1, client certificates): HTTPS and gRPC over TLS with real clients that trust the CA;
with a client CA (mTLS) a client certificate that CA signed is required and checked."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.settings import ServerSettings
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.conftest import GatewayThread, gateway_settings
from tests.models import MINILM

Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, key: Key, issuer: tuple[x509.Certificate, Key] | None, *, ca: bool, server: bool = False
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    signer_name, signer_key = (issuer[0].subject, issuer[1]) if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer_key, hashes.SHA256())


@dataclasses.dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _write(folder: Path, name: str, cert: x509.Certificate, key: Key) -> Pair:
    pair = Pair(folder / f"{name}.crt", folder / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return pair


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: Pair
    server: Pair
    client: Pair
    stranger: Pair  # a client certificate another CA signed


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Taskgate test CA", ca_key, None, ca=True)
    other = _certificate("Another CA", other_key, None, ca=True)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    return Pki(
        ca=_write(folder, "ca", ca, ca_key),
        server=_write(
            folder, "server", _certificate("127.0.0.1", keys[0], (ca, ca_key), ca=False, server=True), keys[0]
        ),
        client=_write(folder, "client", _certificate("a client", keys[1], (ca, ca_key), ca=False), keys[1]),
        stranger=_write(
            folder, "stranger", _certificate("a stranger", keys[2], (other, other_key), ca=False), keys[2]
        ),
    )


def _gateway(store: Path, pki: Pki, *, mutual: bool) -> GatewayThread:
    settings = gateway_settings(store)
    server = dataclasses.replace(
        settings.server,
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        tls_client_ca_file=str(pki.ca.cert) if mutual else "",
    )
    return GatewayThread(dataclasses.replace(settings, server=server))


@pytest.fixture(scope="module")
def tls_gateway(store: Path, pki: Pki) -> Iterator[GatewayThread]:
    server = _gateway(store, pki, mutual=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_gateway(store: Path, pki: Pki) -> Iterator[GatewayThread]:
    server = _gateway(store, pki, mutual=True)
    server.start()
    yield server
    server.stop()


def _context(pki: Pki, client: Pair | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def _embed_https(url: str, verify: ssl.SSLContext) -> int:
    with httpx.Client(base_url=url, verify=verify, timeout=60) as client:
        response = client.post("/api/v1/task/embedding", json={"model_id": MINILM, "inputs": "over TLS"})
        assert response.status_code == 200, response.text
        return len(response.json()["result"]["data"]["values"])


def _credentials(pki: Pki, client: Pair | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )


def _embed_grpc(channel: grpc.Channel) -> int:
    reply = nlp_grpc.NlpServiceStub(channel).EmbeddingTaskPredict(
        nlp.EmbeddingTaskRequest(text="over TLS"), metadata=(("mm-model-id", MINILM),), timeout=60
    )
    return len(reply.result.data_npfloat32sequence.values)


def test_https_and_grpc_over_tls_for_clients_that_trust_the_ca(tls_gateway: GatewayThread, pki: Pki) -> None:
    addresses = tls_gateway.gateway.addresses
    assert addresses.http.startswith("https://127.0.0.1:")
    assert _embed_https(addresses.http, _context(pki)) == 384
    with grpc.secure_channel(addresses.grpc, _credentials(pki)) as channel:
        assert _embed_grpc(channel) == 384
    # a client that does not trust the CA refuses the server
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _embed_https(addresses.http, ssl.create_default_context())
    # plain text is not served on the TLS ports
    with pytest.raises(httpx.TransportError):
        httpx.get(addresses.http.replace("https://", "http://") + "/health", timeout=10)
    with grpc.insecure_channel(addresses.grpc) as plain, pytest.raises(grpc.RpcError) as refused:
        _embed_grpc(plain)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_serves_a_client_certificate_the_ca_signed(mtls_gateway: GatewayThread, pki: Pki) -> None:
    addresses = mtls_gateway.gateway.addresses
    assert _embed_https(addresses.http, _context(pki, pki.client)) == 384
    with grpc.secure_channel(addresses.grpc, _credentials(pki, pki.client)) as channel:
        assert _embed_grpc(channel) == 384


@pytest.mark.parametrize("who", ["no-certificate", "another-ca"])
def test_mtls_refuses_clients_without_a_certificate_the_ca_signed(
    mtls_gateway: GatewayThread, pki: Pki, who: str
) -> None:
    client = None if who == "no-certificate" else pki.stranger
    addresses = mtls_gateway.gateway.addresses
    with pytest.raises(httpx.TransportError):
        _embed_https(addresses.http, _context(pki, client))
    with (
        grpc.secure_channel(addresses.grpc, _credentials(pki, client)) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _embed_grpc(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # the server still serves a client it trusts
    assert _embed_https(addresses.http, _context(pki, pki.client)) == 384


def test_tls_settings_are_checked(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both tls_cert_file and tls_key_file"):
        ServerSettings(tls_cert_file=str(pki.server.cert))
    with pytest.raises(ValueError, match="needs tls_cert_file"):
        ServerSettings(tls_client_ca_file=str(pki.ca.cert))
    with pytest.raises(ValueError, match="tls_key_file: no file"):
        ServerSettings(tls_cert_file=str(pki.server.cert), tls_key_file=str(tmp_path / "missing.key"))
