from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway import settings
from runtimes.base import ThreadSettings


def test_defaults_are_caikits_ports_on_loopback() -> None:
    config = settings.parse([], environ={})
    assert (config.server.host, config.server.grpc_port, config.server.http_port) == ("127.0.0.1", 8085, 8080)
    assert config.model_store == Path("model-store")


def test_environment_then_flag_precedence() -> None:
    env = {"TASKGATE_GRPC_PORT": "9000", "TASKGATE_HTTP_PORT": "9001", "TASKGATE_MODEL_STORE": "/tmp/s"}
    config = settings.parse(["--http-port", "9100", "--preload", "a, b"], environ=env)
    assert config.server.grpc_port == 9000
    assert config.server.http_port == 9100
    assert config.model_store == Path("/tmp/s")
    assert config.preload == ("a", "b")


def test_every_option_has_an_environment_variable() -> None:
    env = {
        "TASKGATE_INTRA_OP_THREADS": "2",
        "TASKGATE_MODEL_WORKERS": "3",
        "TASKGATE_MAX_INPUTS": "7",
        "TASKGATE_MAX_INFLIGHT_PER_MODEL": "5",
        "TASKGATE_HOST": "::1",
    }
    config = settings.parse([], environ=env)
    assert config.runtime.intra_op_threads == 2
    assert config.runtime.model_workers == 3
    assert config.limits.max_inputs == 7
    assert config.limits.max_inflight_per_model == 5
    assert config.server.host == "::1"


def test_settings_are_frozen() -> None:
    config = settings.parse([], environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.grpc_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TASKGATE_GRPC_PORT": "many"}, "TASKGATE_GRPC_PORT"),
        ({"TASKGATE_GRPC_PORT": "70000"}, "grpc_port"),
        ({"TASKGATE_MODEL_WORKERS": "0"}, "model_workers"),
    ],
)
def test_bad_values_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings.parse([], environ=env)


def test_registry_and_timeout_settings_have_flags_and_environment() -> None:
    env = {"TASKGATE_MEMORY_BUDGET_BYTES": "1000000", "TASKGATE_DEFAULT_TIMEOUT_S": "2.5"}
    config = settings.parse(["--max-concurrent-loads", "3"], environ=env)
    assert config.registry.memory_budget_bytes == 1_000_000
    assert config.registry.max_concurrent_loads == 3
    assert config.limits.default_timeout_s == 2.5


def test_every_settings_field_has_a_flag() -> None:
    flags = {attr for _, _, _, _, attr in settings._OPTIONS}
    parts = (settings.ServerSettings, settings.RequestLimits, settings.RegistrySettings, ThreadSettings)
    for part in parts:
        for field in dataclasses.fields(part):
            assert field.name in flags, f"{part.__name__}.{field.name} has no flag"
