"""Caikit's training doors over gRPC, on the protocol-neutral TuningService:
``caikit.runtime.Nlp.NlpTrainingService/TextGenerationTaskPeftPromptTuningTrain`` and
``caikit.runtime.training.TrainingManagement/{GetTrainingStatus, CancelTraining}``.

The HTTP twin (gateway.frontends.http.caikit_training) parses its JSON body into the same
request message and calls ``submit_training`` / ``cancel_training`` here, so both doors read a
Caikit request the same way:

- ``model_name`` names the adapter (served under it once the job completes);
- ``parameters.tuning_type`` PROMPT_TUNING / MULTITASK_PROMPT_TUNING picks the method, the other
  parameters and ``tuning_config`` map onto the method's config by Caikit's names (unset
  optionals keep the method's defaults; ``device`` and ``silence_progress_bars`` are ignored);
- ``train_stream`` / ``val_stream``: ``jsondata`` (inline records; multi-task prompt tuning puts
  them all in task 0, as caikit-nlp does) or ``file`` (a JSON Lines path under the store's
  ``.datasets/`` folder, where records may carry ``"task"``); other sources are refused;
- a refusal's message starts with the Caikit field at fault (``parameters.base_model: ...``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from adapters.jobs.store import JobRecord
from gateway.core import RequestContext
from gateway.errors import InvalidInput, PayloadTooLarge, TaskgateError
from gateway.frontends.grpc.common import rpc
from gateway.tuning.service import DataRef, JobInput, TuningService
from gateway.wire import caikit_data_model_common_training_pb2 as common_pb2
from gateway.wire import caikit_data_model_runtime_training_pb2 as runtime_pb2
from gateway.wire import caikit_runtime_nlp_training_pb2_grpc as train_grpc
from gateway.wire import caikit_runtime_training_pb2_grpc as management_grpc

TUNING_TYPES = {"PROMPT_TUNING": "prompt_tuning", "MULTITASK_PROMPT_TUNING": "multitask_prompt_tuning"}
PARAMETERS = (
    "num_epochs",
    "learning_rate",
    "verbalizer",
    "batch_size",
    "max_source_length",
    "max_target_length",
    "accumulate_steps",
    "seed",
)
TUNING_CONFIG = (
    "num_virtual_tokens",
    "prompt_tuning_init_method",
    "prompt_tuning_init_text",
    "output_model_types",
)
TORCH_DTYPES = ("", "float32", "torch.float32")
SOURCES = (
    "jsondata {data: [{input, output}, ...]} or file {filename} "
    "(a JSON Lines path under the store's .datasets/ folder)"
)
# TuningService's param -> the Caikit request field it stands for
_FIELDS = {
    "name": "model_name",
    "model": "parameters.base_model",
    "method": "parameters.tuning_type",
    "training_file": "parameters.train_stream",
    "validation_file": "parameters.val_stream",
}
CANCEL_WAIT_S = 30.0  # how long a cancel waits for a running job to stop (within one step)
_POLL_S = 0.1


def _refuse(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", param=field)


def train_job_input(request: Any) -> JobInput:
    """A TextGenerationTaskPeftPromptTuningTrainRequest as the job it asks for."""
    if not request.model_name:
        raise _refuse("model_name", "required: it names the tuned model (the adapter served under it)")
    if request.HasField("output_path") and request.output_path.ByteSize():
        raise _refuse(
            "output_path",
            "not supported: Taskgate publishes the tuned model into its adapter store, served as model_name",
        )
    params = request.parameters
    method = _method(params)
    return JobInput(
        name=request.model_name,
        method=method,
        base_model=params.base_model,
        train=_data(params.train_stream if params.HasField("train_stream") else None, "train_stream", method),
        validation=_data(params.val_stream, "val_stream", method) if params.HasField("val_stream") else None,
        hyperparameters=_hyperparameters(params),
    )


def _method(params: Any) -> str:
    tuning_type = params.tuning_type if params.HasField("tuning_type") else "PROMPT_TUNING"
    method = TUNING_TYPES.get(tuning_type.upper())
    if method is None:
        raise _refuse(
            "parameters.tuning_type", f"must be one of {', '.join(TUNING_TYPES)}, got {tuning_type!r}"
        )
    return method


def _hyperparameters(params: Any) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(params, name) for name in PARAMETERS if params.HasField(name)}
    dtype = params.torch_dtype if params.HasField("torch_dtype") else ""
    if dtype not in TORCH_DTYPES:
        raise _refuse("parameters.torch_dtype", f"Taskgate tunes in float32 only, got {dtype!r}")
    if params.HasField("tuning_config"):
        config = params.tuning_config
        if config.prompt_tuning_init_source_model:
            raise _refuse(
                "parameters.tuning_config.prompt_tuning_init_source_model",
                "not supported: initialise with prompt_tuning_init_method RANDOM or TEXT",
            )
        values["num_virtual_tokens"] = config.num_virtual_tokens
        if config.prompt_tuning_init_method:
            values["prompt_tuning_init_method"] = config.prompt_tuning_init_method.upper()
        if config.prompt_tuning_init_text:
            values["prompt_tuning_init_text"] = config.prompt_tuning_init_text
        if config.output_model_types:
            values["output_model_types"] = list(config.output_model_types)
    return values


def _data(stream: Any, name: str, method: str) -> DataRef:
    field = f"parameters.{name}"
    source = stream.WhichOneof("data_stream") if stream is not None else None
    if source is None:
        raise _refuse(field, f"no data: give {SOURCES}")
    if source == "file":
        return DataRef(dataset=stream.file.filename)
    if source != "jsondata":
        raise _refuse(field, f"the {source} data source is not served here; give {SOURCES}")
    records: list[dict[str, Any]] = [{"input": r.input, "output": r.output} for r in stream.jsondata.data]
    if method == TUNING_TYPES["MULTITASK_PROMPT_TUNING"]:
        for record in records:
            record["task"] = 0  # a GenerationTrainRecord has no task: caikit-nlp trains task id 0
    return DataRef(records=records)


def caikit_error(error: TaskgateError) -> TaskgateError:
    """A TuningService refusal, its message led by the Caikit field it names."""
    if error.param is None:
        return error
    if error.param == "hyperparameters":
        word = error.message.split(" ", 1)[0]
        if word in TUNING_CONFIG:
            field = f"parameters.tuning_config.{word}"
        else:
            field = f"parameters.{word}" if word in PARAMETERS else "parameters"
    else:
        field = _FIELDS.get(error.param, error.param)
    return type(error)(f"{field}: {error.message}", param=field, retry_after_s=error.retry_after_s)


async def submit_training(tuning: TuningService, request: Any) -> JobRecord:
    job = train_job_input(request)
    try:
        return await tuning.create_job(job)
    except (InvalidInput, PayloadTooLarge) as exc:
        raise caikit_error(exc) from None


async def cancel_training(tuning: TuningService, training_id: str, deadline: float | None) -> JobRecord:
    """Cancel, then wait (a step at most, within the deadline) for the job to end, as Caikit's
    cancel answers CANCELED; a job that has not stopped by then answers as it is."""
    record = await tuning.cancel(training_id)
    give_up = time.monotonic() + CANCEL_WAIT_S
    if deadline is not None:
        give_up = min(give_up, deadline - 0.5)
    while not record.state.finished and time.monotonic() < give_up:
        await asyncio.sleep(_POLL_S)
        record = await tuning.job(training_id)
    return record


def status_response(record: JobRecord) -> runtime_pb2.TrainingStatusResponse:
    response = runtime_pb2.TrainingStatusResponse(
        training_id=record.id,
        state=common_pb2.TrainingStatus.Value(record.state.value),
        reasons=list(record.reasons),
    )
    response.submission_timestamp.FromNanoseconds(round(record.created_at * 1e9))
    if record.finished_at is not None:
        response.completion_timestamp.FromNanoseconds(round(record.finished_at * 1e9))
    return response


class CaikitTrainingServicer(train_grpc.NlpTrainingServiceServicer):
    def __init__(self, tuning: TuningService) -> None:
        self._tuning = tuning

    @rpc
    async def TextGenerationTaskPeftPromptTuningTrain(
        self, request: Any, ctx: RequestContext
    ) -> runtime_pb2.TrainingJob:
        record = await submit_training(self._tuning, request)
        return runtime_pb2.TrainingJob(training_id=record.id, model_name=record.name)


class TrainingManagementServicer(management_grpc.TrainingManagementServicer):
    def __init__(self, tuning: TuningService) -> None:
        self._tuning = tuning

    @rpc
    async def GetTrainingStatus(
        self, request: Any, ctx: RequestContext
    ) -> runtime_pb2.TrainingStatusResponse:
        return status_response(await self._tuning.job(request.training_id))

    @rpc
    async def CancelTraining(self, request: Any, ctx: RequestContext) -> runtime_pb2.TrainingStatusResponse:
        return status_response(await cancel_training(self._tuning, request.training_id, ctx.deadline))
