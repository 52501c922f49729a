from __future__ import annotations

import grpc

from gateway.errors import ERROR_CLASSES, ErrorKind
from gateway.frontends.wire_codes import WIRE, wire_code


def test_every_kind_has_one_wire_entry() -> None:
    assert set(WIRE) == set(ErrorKind)
    for kind, cls in ERROR_CLASSES.items():
        assert wire_code(cls("x")) is WIRE[kind]


def test_the_table_agrees_between_grpc_and_http() -> None:
    # the same meaning on both transports (KServe's two tables disagree; ours is one)
    expected = {
        grpc.StatusCode.INVALID_ARGUMENT: {400, 413},
        grpc.StatusCode.NOT_FOUND: {404},
        grpc.StatusCode.ALREADY_EXISTS: {409},
        grpc.StatusCode.RESOURCE_EXHAUSTED: {429},
        grpc.StatusCode.DEADLINE_EXCEEDED: {504},
        grpc.StatusCode.UNAVAILABLE: {503},
        grpc.StatusCode.CANCELLED: {499},
        grpc.StatusCode.INTERNAL: {500},
        grpc.StatusCode.UNAUTHENTICATED: {401},
        grpc.StatusCode.PERMISSION_DENIED: {403},
        grpc.StatusCode.UNIMPLEMENTED: {404, 405},  # no such route / method; a wrong HTTP verb
    }
    for code in WIRE.values():
        assert code.http in expected[code.grpc]


def test_kserve_never_reads_the_gateway_command_line() -> None:
    # kserve parses sys.argv when imported; a value it cannot parse would end the process
    import subprocess
    import sys

    argv = "['taskgate', '--http_port', 'not-a-port']"
    probe = f"import sys; sys.argv = {argv}; import gateway.frontends.kserve_v2"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
