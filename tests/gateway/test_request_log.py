"""The request record's checks (request id, traceparent), its metrics and their forgetting,
and the log formats (gateway.ops.request_log, gateway.request_metrics, gateway.ops.log_format)."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.errors import ModelNotFound
from gateway.metrics import Metrics
from gateway.ops.log_format import JsonFormatter, formatter
from gateway.ops.request_log import (
    RequestObserver,
    TokenClock,
    clean_request_id,
    current_record,
    note_model,
    note_task,
    valid_traceparent,
)
from gateway.settings import ServerSettings
from gateway.tasks import Task

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_request_id_is_kept_only_when_short_printable_ascii() -> None:
    assert clean_request_id("abc-123_X.y") == "abc-123_X.y"
    assert clean_request_id("a" * 128) == "a" * 128
    for bad in ("", None, "a" * 129, "has space", "tab\there", "new\nline", "caf\u00e9", "\x00"):
        made = clean_request_id(bad)
        assert made != bad and len(made) == 32 and made.isalnum()


def test_a_traceparent_is_kept_only_when_valid() -> None:
    assert valid_traceparent(VALID) == VALID
    assert valid_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later") != ""
    for bad in (
        None,
        "",
        VALID.upper(),
        VALID + "-x",  # version 00 has exactly four fields
        "ff" + VALID[2:],  # version ff is invalid
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        VALID + "-" + "a" * 600,
    ):
        assert valid_traceparent(bad) == ""


def test_a_finished_record_moves_the_metrics_and_a_forgotten_model_leaves_no_series() -> None:
    metrics = Metrics()
    observer = RequestObserver(metrics, access=False)
    record, token = observer.begin("grpc", "caikit", "/x/Y", "given", VALID)
    assert current_record() is record
    note_task(Task.TEXT_GENERATION)
    note_model("model-a", "adapter@1")
    clock = TokenClock(record)
    clock.tick(clock.submitted + 0.5, clock.submitted + 0.25)  # queued 0.25 s, first token 0.25 s later
    clock.tick(clock.submitted + 0.75, 0.0)
    clock.tick(clock.submitted + 1.0, 0.0)
    observer.end(token)
    assert current_record() is None
    observer.finish(record, "OK")
    registry = metrics.registry
    labels = {"model": "model-a", "adapter": "adapter@1", "task": "text-generation"}
    assert (
        registry.get_sample_value(
            "taskgate_requests_total", {**labels, "protocol": "grpc", "door": "caikit", "code": "OK"}
        )
        == 1
    )
    assert registry.get_sample_value("taskgate_generated_tokens_total", {"model": "model-a"}) == 3
    assert registry.get_sample_value("taskgate_inter_token_seconds_count", {"model": "model-a"}) == 2
    assert registry.get_sample_value(
        "taskgate_inter_token_seconds_sum", {"model": "model-a"}
    ) == pytest.approx(0.5)
    split = {"model": "model-a", "task": "text-generation"}
    assert registry.get_sample_value("taskgate_request_queue_seconds_sum", split) == pytest.approx(0.25)
    assert registry.get_sample_value("taskgate_request_model_seconds_sum", split) == pytest.approx(0.75)
    metrics.forget_model("model-a")
    shown = metrics.exposition().decode()
    assert "model-a" not in shown


def test_an_error_sets_the_code_and_an_unresolved_model_is_unknown() -> None:
    metrics = Metrics()
    observer = RequestObserver(metrics, access=False)
    record, token = observer.begin("http", "openai", "POST /v1/embeddings", None, "bogus")
    note_task(Task.EMBEDDING)
    record.failed(ModelNotFound("no model 'client-chosen'"))
    observer.end(token)
    observer.finish(record, "INTERNAL")  # the code an error set wins over the door's guess
    assert record.traceparent == ""
    labels = {"model": "unknown", "adapter": "", "task": "embedding", "protocol": "http", "door": "openai"}
    assert metrics.registry.get_sample_value("taskgate_requests_total", {**labels, "code": "NOT_FOUND"}) == 1
    assert "client-chosen" not in metrics.exposition().decode()


def test_access_lines_as_json_and_text(caplog: pytest.LogCaptureFixture) -> None:
    observer = RequestObserver(Metrics(), access=True)
    record, token = observer.begin("http", "caikit", "POST /api/v1/task/embedding", "id-7", VALID)
    record.tenant = "team-a"
    observer.end(token)
    with caplog.at_level(logging.INFO, logger="taskgate.access"):
        observer.finish(record, "OK")
    (line,) = [r for r in caplog.records if r.name == "taskgate.access"]
    parsed = json.loads(JsonFormatter().format(line))
    assert parsed["message"] == "access" and parsed["request_id"] == "id-7" and parsed["code"] == "OK"
    assert parsed["trace_id"] == VALID[3:35] and parsed["tenant"] == "team-a"
    assert "request_payload" not in parsed and parsed["total_ms"] >= 0
    text = formatter("text").format(line)
    assert "access request_id=id-7" in text and "method='POST /api/v1/task/embedding'" in text
    plain = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", ("1",), None)
    assert json.loads(JsonFormatter().format(plain))["message"] == "boom 1"


def test_log_format_is_one_setting() -> None:
    assert ServerSettings(log_format="json").log_format == "json"
    with pytest.raises(ValueError, match="log_format"):
        ServerSettings(log_format="xml")


def test_the_log_flags_and_their_environment_variables() -> None:
    import argparse

    from gateway import settings

    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    flags = parser.parse_args(["--log-format", "json", "--access-log", "0", "--log-payloads", "1"])
    server = settings.from_args(flags, {}).server
    assert (server.log_format, server.access_log, server.log_payloads) == ("json", False, True)
    environ = {"TASKGATE_LOG_FORMAT": "json", "TASKGATE_ACCESS_LOG": "off"}
    server = settings.from_args(parser.parse_args([]), environ).server
    assert (server.log_format, server.access_log, server.log_payloads) == ("json", False, False)
    default = settings.from_args(parser.parse_args([]), {}).server
    assert (default.log_format, default.access_log, default.log_payloads) == ("text", True, False)
