from __future__ import annotations

import subprocess
import sys

from gateway.errors import ERROR_CLASSES, ErrorKind, internal


def test_every_kind_has_one_class() -> None:
    assert set(ErrorKind) == set(ERROR_CLASSES)
    for kind, cls in ERROR_CLASSES.items():
        assert cls("x").kind is kind


def test_internal_errors_carry_the_request_id_and_nothing_else() -> None:
    error = internal("abc123")
    assert "abc123" in error.message
    assert "Traceback" not in error.message


def test_the_core_imports_no_transport() -> None:
    # the taxonomy, the core, the batcher, the registry and the generation engine know no protocol:
    # grpc and the web framework belong to gateway.frontends
    probe = (
        "import sys, gateway.errors, gateway.core, gateway.batcher, gateway.models.registry, "
        "gateway.generation.service, gateway.models.management; "
        "print(sorted(m for m in ('grpc', 'fastapi', 'starlette', 'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
