"""Caikit's training routes over REST, on the protocol-neutral TuningService:

- ``POST /api/v1/TextGenerationTaskPeftPromptTuningTrain`` (the body is Caikit's train request as
  JSON) answers ``{"training_id", "model_name"}``;
- ``GET /management/trainings?training_id=`` answers the status as Caikit's HTTP server renders
  a TrainingStatusResponse (``state`` by name, timestamps as RFC 3339 strings or null);
- ``DELETE /management/trainings?training_id=`` cancels and answers the same.

The body is read into the gRPC door's request message (``json_format``), so both doors read a
request the same way (gateway.frontends.grpc.caikit_training). A data stream may be written as
protobuf JSON (``{"jsondata": {"data": [...]}}``, ``{"file": {"filename": ...}}``) or as Caikit's
HTTP server takes it (``{"data_stream": {"data": [...]}}``, the source told by its fields).
Errors have Caikit's body (the default for these paths).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request
from google.protobuf import json_format, timestamp_pb2

from adapters.jobs.store import JobRecord
from gateway.errors import InvalidInput
from gateway.frontends.grpc.caikit_training import cancel_training, submit_training
from gateway.frontends.http.common import Json, deadline
from gateway.tuning.service import TuningService
from gateway.wire import caikit_runtime_nlp_training_pb2 as train_pb2

TRAIN_ROUTE = "/api/v1/TextGenerationTaskPeftPromptTuningTrain"
TRAININGS_ROUTE = "/management/trainings"
_STREAMS = ("train_stream", "val_stream")

_RECORDS = {
    "type": "object",
    "properties": {
        "jsondata": {
            "type": "object",
            "properties": {
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"input": {"type": "string"}, "output": {"type": "string"}},
                    },
                }
            },
        },
        "file": {
            "type": "object",
            "description": "a JSON Lines path under the model store's .datasets/ folder",
            "properties": {"filename": {"type": "string"}},
        },
    },
}
_TRAIN_BODY = {
    "type": "object",
    "required": ["model_name", "parameters"],
    "properties": {
        "model_name": {"type": "string", "description": "the adapter name the tuned model is served under"},
        "parameters": {
            "type": "object",
            "required": ["base_model", "train_stream"],
            "properties": {
                "base_model": {"type": "string"},
                "train_stream": _RECORDS,
                "val_stream": _RECORDS,
                "tuning_config": {
                    "type": "object",
                    "properties": {
                        "num_virtual_tokens": {"type": "integer"},
                        "prompt_tuning_init_method": {"type": "string", "enum": ["RANDOM", "TEXT"]},
                        "prompt_tuning_init_text": {"type": "string"},
                        "output_model_types": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "tuning_type": {"type": "string", "enum": ["PROMPT_TUNING", "MULTITASK_PROMPT_TUNING"]},
                "num_epochs": {"type": "integer"},
                "learning_rate": {"type": "number"},
                "verbalizer": {"type": "string"},
                "batch_size": {"type": "integer"},
                "max_source_length": {"type": "integer"},
                "max_target_length": {"type": "integer"},
                "accumulate_steps": {"type": "integer"},
                "seed": {"type": "integer"},
            },
        },
    },
}


def _caikit_stream(value: Any, name: str) -> Any:
    """Caikit's HTTP form ``{"data_stream": {...}}`` as the protobuf JSON oneof member."""
    if not (isinstance(value, dict) and set(value) == {"data_stream"}):
        return value
    inner = value["data_stream"]
    if isinstance(inner, dict):
        for key, member in (("data", "jsondata"), ("filename", "file"), ("dirname", "directory")):
            if key in inner:
                return {member: inner}
        if "files" in inner:
            return {"list_of_files" if set(inner) == {"files"} else "s3files": inner}
    raise InvalidInput(
        f"parameters.{name}.data_stream: give {{data: [...]}} or {{filename: ...}}",
        param=f"parameters.{name}",
    )


def parse_train_body(raw: bytes) -> Any:
    """The JSON body as a TextGenerationTaskPeftPromptTuningTrainRequest."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    parameters = body.get("parameters")
    if isinstance(parameters, dict):
        for name in _STREAMS:
            if name in parameters:
                parameters[name] = _caikit_stream(parameters[name], name)
    try:
        return json_format.ParseDict(body, train_pb2.TextGenerationTaskPeftPromptTuningTrainRequest())
    except (json_format.ParseError, ValueError, TypeError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput(f"invalid request: {first_line}") from None


def _timestamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp.ToJsonString()


def status_json(record: JobRecord) -> Json:
    """A TrainingStatusResponse as Caikit's HTTP server writes it (DataBase.to_json)."""
    return {
        "training_id": record.id,
        "state": record.state.value,
        "submission_timestamp": _timestamp(record.created_at),
        "completion_timestamp": _timestamp(record.finished_at),
        "reasons": list(record.reasons),
    }


def _training_id(value: str | None) -> str:
    if not value:
        raise InvalidInput("training_id: the query parameter is required", param="training_id")
    return value


def caikit_training_router(tuning: TuningService) -> APIRouter:
    router = APIRouter(tags=["training"])

    @router.post(
        TRAIN_ROUTE,
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": _TRAIN_BODY}}}
        },
    )
    async def train(request: Request) -> Json:
        """Start prompt tuning (Caikit's TextGenerationTaskPeftPromptTuningTrain); answers at once."""
        raw = await request.body()
        message = await asyncio.to_thread(parse_train_body, raw)
        record = await submit_training(tuning, message)
        return {"training_id": record.id, "model_name": record.name}

    @router.get(TRAININGS_ROUTE)
    async def training_status(training_id: str | None = None) -> Json:
        """A training's state (Caikit's GetTrainingStatus)."""
        return status_json(await tuning.job(_training_id(training_id)))

    @router.delete(TRAININGS_ROUTE)
    async def cancel(request: Request, training_id: str | None = None) -> Json:
        """Cancel a training and answer its state (Caikit's CancelTraining)."""
        job_id = _training_id(training_id)
        return status_json(await cancel_training(tuning, job_id, deadline(request)))

    return router
