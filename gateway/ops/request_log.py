"""One record per request, across the layers that serve it, and its access line.

A door begins the record when a request arrives (``RequestObserver.begin``: protocol, door,
method, the request id, a valid W3C ``traceparent``) and makes it the current one (a
contextvar, so the core, the batcher and the generation consumer reach it without new
parameters); the core fills in what it learns (task, model, adapter, queue wait, model time,
time to first token, gaps between tokens, tokens generated); the door closes it with the
outcome code (a gRPC status name from the one table, ``gateway.frontends.wire_codes``) when the
response, or the stream, has ended (``RequestObserver.finish``): the request metrics move and
one access line is logged (``taskgate.access``; JSON fields when ``--log-format json``).

Everything a client sends is bounded before it is kept: a request id is at most 128 printable
ASCII characters (else a new one is made), a traceparent is kept only when valid, payloads are
kept (cut to ``PAYLOAD_CHARS``) only when ``log_payloads`` is set.
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from gateway.errors import TaskgateError, new_request_id

if TYPE_CHECKING:
    from gateway.metrics import Metrics

access_log = logging.getLogger("taskgate.access")

PAYLOAD_CHARS = 2048
_REQUEST_ID = re.compile(r"[!-~]{1,128}")  # printable ASCII, no space
# version-traceid-parentid-flags (lower-case hex); a later version may append "-..." fields
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16
_CURRENT: ContextVar[RequestRecord | None] = ContextVar("taskgate_request", default=None)


def clean_request_id(raw: str | None) -> str:
    """The caller's request id when it is 1-128 printable ASCII characters, else a new one."""
    if raw and _REQUEST_ID.fullmatch(raw):
        return raw
    return new_request_id()


def valid_traceparent(raw: str | None) -> str:
    """``raw`` when it is a valid W3C traceparent header value, else ""."""
    if not raw or len(raw) < 55 or len(raw) > 512:
        return ""
    match = _TRACEPARENT.match(raw)
    if match is None:
        return ""
    version, trace_id, parent_id, _ = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return ""
    if version == "00" and len(raw) != 55:
        return ""
    if len(raw) > 55 and raw[55] != "-":
        return ""
    return raw


class RequestRecord:
    """What is known about one request; cheap to fill (attribute writes, one float append per
    generated token)."""

    __slots__ = (
        "adapter",
        "code",
        "door",
        "gaps",
        "method",
        "model",
        "model_s",
        "payloads",
        "protocol",
        "queue_s",
        "request_id",
        "request_payload",
        "response_payload",
        "started",
        "status",
        "task",
        "tenant",
        "tokens",
        "traceparent",
        "ttft_s",
    )

    def __init__(self, protocol: str, door: str, method: str, request_id: str, traceparent: str) -> None:
        self.protocol = protocol
        self.door = door
        self.method = method
        self.request_id = request_id
        self.traceparent = traceparent
        self.started = time.perf_counter()
        self.task = ""
        self.model = ""  # a model id the registry resolved (never the client's string unchecked)
        self.adapter = ""  # a published adapter reference, name@N
        self.tenant = ""
        self.queue_s = 0.0
        self.model_s = 0.0
        self.ttft_s: float | None = None
        self.gaps: list[float] = []
        self.tokens = 0
        self.code = ""  # set by an error on its way out; "" at the end: from the status
        self.status = 0  # HTTP status sent (0: gRPC, or none sent)
        self.payloads = False
        self.request_payload = ""
        self.response_payload = ""

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35] if self.traceparent else ""

    def add_batch(self, queue_s: float, model_s: float) -> None:
        """The encoder batcher's share: time queued before the row's batch ran, and its run."""
        self.queue_s += queue_s
        self.model_s += model_s

    def failed(self, error: TaskgateError) -> None:
        from gateway.frontends.wire_codes import wire_code

        self.code = wire_code(error).grpc.name


class TokenClock:
    """One generated sequence's timing, fed by its consumer on the event loop from the
    scheduler's timestamps (``time.perf_counter``): queue wait (submitted to the step that
    prefilled it), time to first token, the gap before every later token, model time."""

    __slots__ = ("admitted", "last", "record", "submitted")

    def __init__(self, record: RequestRecord) -> None:
        self.record = record
        self.submitted = time.perf_counter()
        self.admitted = 0.0
        self.last = 0.0

    def tick(self, at: float, admitted_at: float) -> None:
        record = self.record
        if self.last:
            record.gaps.append(at - self.last)
        else:
            self.admitted = admitted_at or at
            if record.ttft_s is None:
                record.ttft_s = at - record.started
            record.queue_s = max(record.queue_s, self.admitted - self.submitted)
        self.last = at
        record.tokens += 1
        record.model_s = max(record.model_s, at - self.admitted)


def current_record() -> RequestRecord | None:
    return _CURRENT.get()


def current_request_id() -> str | None:
    record = _CURRENT.get()
    return record.request_id if record is not None else None


def note_task(task: Any) -> None:
    """The core names the task (a ``gateway.tasks.Task``) as soon as a request reaches it."""
    record = _CURRENT.get()
    if record is not None:
        record.task = task.value


def note_model(model_id: str, adapter: str = "") -> None:
    """The model (and adapter reference) that serves the request, once resolved."""
    record = _CURRENT.get()
    if record is not None:
        record.model = model_id
        record.adapter = adapter


def note_error(error: TaskgateError) -> None:
    """The error a door answers with (its code is the request's outcome)."""
    record = _CURRENT.get()
    if record is not None:
        record.failed(error)


def note_tenant(name: str) -> None:
    record = _CURRENT.get()
    if record is not None:
        record.tenant = name


def keep_request_payload(message: Any) -> None:
    """A parsed gRPC request, kept (as one-line text) when payloads are logged."""
    record = _CURRENT.get()
    if record is not None and record.payloads:
        from google.protobuf import text_format

        record.request_payload = cut(text_format.MessageToString(message, as_one_line=True))


def cut(text: str) -> str:
    return text if len(text) <= PAYLOAD_CHARS else text[:PAYLOAD_CHARS] + "..."


class RequestObserver:
    """Begins and finishes records for one transport's doors (each server has its own)."""

    def __init__(self, metrics: Metrics, *, access: bool = True, payloads: bool = False) -> None:
        self.metrics = metrics
        self.access = access
        self.payloads = payloads

    def begin(
        self, protocol: str, door: str, method: str, request_id: str | None, traceparent: str | None
    ) -> tuple[RequestRecord, Token[RequestRecord | None]]:
        """A record for a request that just arrived, made current; with the token that resets it."""
        record = RequestRecord(
            protocol, door, method, clean_request_id(request_id), valid_traceparent(traceparent)
        )
        record.payloads = self.payloads
        return record, _CURRENT.set(record)

    @staticmethod
    def end(token: Token[RequestRecord | None]) -> None:
        """The record is no longer current (it may still be finished after this)."""
        _CURRENT.reset(token)

    def finish(self, record: RequestRecord, code: str) -> None:
        """The request ended with ``code`` (a gRPC status name): metrics, then the access line."""
        total_s = time.perf_counter() - record.started
        if not record.code:
            record.code = code
        self.metrics.requests.observe(record, total_s)
        if self.access and access_log.isEnabledFor(logging.INFO):
            fields = access_fields(record, total_s)
            access_log.info("%s", AccessLine(fields), extra={"access": fields})


def access_fields(record: RequestRecord, total_s: float) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": record.request_id,
        "protocol": record.protocol,
        "door": record.door,
        "method": record.method,
        "code": record.code,
    }
    if record.status:
        fields["status"] = record.status
    if record.traceparent:
        fields["trace_id"] = record.trace_id
        fields["traceparent"] = record.traceparent
    if record.task:
        fields["task"] = record.task
        fields["model"] = record.model or "unknown"
    if record.adapter:
        fields["adapter"] = record.adapter
    if record.tenant:
        fields["tenant"] = record.tenant
    fields["total_ms"] = round(total_s * 1000, 3)
    if record.model:
        fields["queue_ms"] = round(record.queue_s * 1000, 3)
        fields["model_ms"] = round(record.model_s * 1000, 3)
    if record.tokens:
        fields["tokens"] = record.tokens
    if record.ttft_s is not None:
        fields["ttft_ms"] = round(record.ttft_s * 1000, 3)
    if record.payloads:
        fields["request_payload"] = record.request_payload
        fields["response_payload"] = record.response_payload
    return fields


class AccessLine:
    """The text form of an access line (built only if a text formatter asks for it)."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return "access " + " ".join(f"{key}={_shown(value)}" for key, value in self.fields.items())


def _shown(value: Any) -> str:
    if isinstance(value, str) and (not value or not value.isprintable() or " " in value):
        return repr(value)
    return str(value)
