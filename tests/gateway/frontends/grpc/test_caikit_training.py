"""Caikit's training API over a real gRPC socket, with Caikit's message names: prompt tuning and
multi-task prompt tuning on SmolLM2 reach COMPLETED through TrainingManagement and are served by
TextGenerationTaskPredict under model_name; cancel; unknown ids; bad requests refused naming the
field before any job exists; the services are described by reflection and health."""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from gateway.models.defaults import DEFAULT_GENERATION_MODEL
from gateway.wire import caikit_data_model_caikit_nlp_training_pb2 as caikit_nlp_pb2
from gateway.wire import caikit_data_model_common_training_pb2 as common_pb2
from gateway.wire import caikit_data_model_runtime_training_pb2 as runtime_pb2
from gateway.wire import caikit_runtime_nlp_pb2 as nlp_pb2
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from gateway.wire import caikit_runtime_nlp_training_pb2 as train_pb2
from gateway.wire import caikit_runtime_nlp_training_pb2_grpc as train_grpc
from gateway.wire import caikit_runtime_training_pb2_grpc as management_grpc
from gateway.wire import taskgate_tuning_pb2 as tuning_pb2
from gateway.wire import taskgate_tuning_pb2_grpc as tuning_grpc
from runtimes.gguf_convert import CONVERTED
from tests.conftest import GatewayThread
from tests.tuning_data import FACTS, chat_prompt, fact_records

Status = common_pb2.TrainingStatus
FINISHED = (Status.COMPLETED, Status.CANCELED, Status.ERRORED)
QUESTION = chat_prompt(next(iter(FACTS)))


@pytest.fixture(scope="module")
def channel(tuning_gateway: GatewayThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(tuning_gateway.gateway.addresses.grpc) as chan:
        yield chan


@pytest.fixture(scope="module")
def train(channel: grpc.Channel) -> train_grpc.NlpTrainingServiceStub:
    return train_grpc.NlpTrainingServiceStub(channel)


@pytest.fixture(scope="module")
def trainings(channel: grpc.Channel) -> management_grpc.TrainingManagementStub:
    return management_grpc.TrainingManagementStub(channel)


def _records(rows: list[dict[str, str]]) -> train_pb2.DataStreamSourceGenerationTrainRecord:
    data = [caikit_nlp_pb2.GenerationTrainRecord(input=r["input"], output=r["output"]) for r in rows]
    return train_pb2.DataStreamSourceGenerationTrainRecord(
        jsondata=train_pb2.DataStreamSourceGenerationTrainRecordJsonData(data=data)
    )


def _request(
    model_name: str, **parameters: object
) -> train_pb2.TextGenerationTaskPeftPromptTuningTrainRequest:
    values: dict[str, object] = {
        "base_model": DEFAULT_GENERATION_MODEL,
        "train_stream": _records(fact_records()),
        "tuning_config": caikit_nlp_pb2.TuningConfig(
            num_virtual_tokens=8,
            prompt_tuning_init_method="TEXT",
            prompt_tuning_init_text="Answer with the made-up fact:",
            output_model_types=["DECODER"],
        ),
        "tuning_type": "PROMPT_TUNING",
        "num_epochs": 5,
        "learning_rate": 0.3,
        "batch_size": 3,
        "max_source_length": 64,
        "max_target_length": 32,
        "accumulate_steps": 1,
        "torch_dtype": "float32",
        "silence_progress_bars": True,
        "seed": 7,
        **parameters,
    }
    return train_pb2.TextGenerationTaskPeftPromptTuningTrainRequest(
        model_name=model_name,
        parameters=train_pb2.TextGenerationTaskPeftPromptTuningTrainParameters(**values),
    )


def _wait(
    trainings: management_grpc.TrainingManagementStub, training_id: str, timeout: float = 240
) -> runtime_pb2.TrainingStatusResponse:
    give_up = time.monotonic() + timeout
    request = runtime_pb2.TrainingInfoRequest(training_id=training_id)
    while time.monotonic() < give_up:
        status = trainings.GetTrainingStatus(request, timeout=30)
        if status.state in FINISHED:
            return status
        time.sleep(0.25)
    raise AssertionError(f"training {training_id} did not finish in {timeout} s")


def _generate(channel: grpc.Channel, model_id: str, text: str = QUESTION) -> Any:
    stub = nlp_grpc.NlpServiceStub(channel)
    request = nlp_pb2.TextGenerationTaskRequest(text=text, max_new_tokens=12)
    return stub.TextGenerationTaskPredict(request, metadata=(("mm-model-id", model_id),), timeout=120)


def _step_losses(channel: grpc.Channel, training_id: str) -> list[float]:
    """The job's step losses, from Taskgate's own job feed (the same job as Caikit's training)."""
    updates = tuning_grpc.TuningStub(channel).WatchJob(
        tuning_pb2.WatchJobRequest(job_id=training_id), timeout=60
    )
    return [u.event.progress.loss for u in updates if u.HasField("event") and u.event.HasField("progress")]


def _peft_greedy(tuning_store: Path, adapter: Path, prompt: str, tokens: int) -> tuple[str, str]:
    """Greedy text of PEFT's own model with the adapter, and of the base model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = tuning_store / DEFAULT_GENERATION_MODEL / CONVERTED
    tokenizer = AutoTokenizer.from_pretrained(str(hf))
    base = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    texts = []
    with torch.inference_mode(), warnings.catch_warnings():
        # PEFT's prompt tuning drops the position ids generate passes (and says so); positions then
        # count the virtual tokens, as the served engine's do
        warnings.filterwarnings("ignore", "Position ids are not supported", UserWarning)
        for use_adapter in (True, False):
            with contextlib.nullcontext() if use_adapter else model.disable_adapter():
                out = model.generate(input_ids=ids, max_new_tokens=tokens, do_sample=False, eos_token_id=2)
            texts.append(str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)))
    return texts[0], texts[1]


def _job_count(channel: grpc.Channel) -> int:
    page = tuning_grpc.TuningStub(channel).ListJobs(tuning_pb2.ListJobsRequest(page_size=100), timeout=30)
    return len(page.jobs)


def test_prompt_tuning_completes_its_loss_falls_and_it_is_served(
    tuning_gateway: GatewayThread,
    tuning_store: Path,
    channel: grpc.Channel,
    train: train_grpc.NlpTrainingServiceStub,
    trainings: management_grpc.TrainingManagementStub,
) -> None:
    request = _request("caikit-facts", val_stream=_records(fact_records()))
    job = train.TextGenerationTaskPeftPromptTuningTrain(request, timeout=60)
    assert job.model_name == "caikit-facts" and job.training_id.startswith("ftjob-")
    status = _wait(trainings, job.training_id)
    assert status.state == Status.COMPLETED, status.reasons
    assert status.training_id == job.training_id
    assert status.reasons == ["published caikit-facts@1"]
    submitted = status.submission_timestamp.ToNanoseconds()
    assert 0 < submitted < status.completion_timestamp.ToNanoseconds()

    losses = _step_losses(channel, job.training_id)
    assert len(losses) == 5 and losses[-1] < losses[0] - 0.25, losses  # 3 records, batch 3, 5 epochs

    tuned = _generate(channel, "caikit-facts")
    assert tuned.generated_tokens > 0 and tuned.generated_text
    assert _generate(channel, "caikit-facts@1").generated_text == tuned.generated_text
    # the answer is the trained prompt's (PEFT's own model on the published files), not the base's
    folder = tuning_gateway.gateway.adapter_store.get("caikit-facts").folder
    reference, base = _peft_greedy(tuning_store, folder, QUESTION, 12)
    assert tuned.generated_text == reference != base
    with pytest.raises(grpc.RpcError) as missing:
        _generate(channel, "caikit-facts@2")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    # cancelling a finished training answers its final state
    cancelled = trainings.CancelTraining(
        runtime_pb2.TrainingInfoRequest(training_id=job.training_id), timeout=30
    )
    assert cancelled.state == Status.COMPLETED and list(cancelled.reasons) == ["published caikit-facts@1"]


def test_multitask_prompt_tuning_with_two_tasks_from_a_store_dataset(
    channel: grpc.Channel,
    tuning_store: Path,
    train: train_grpc.NlpTrainingServiceStub,
    trainings: management_grpc.TrainingManagementStub,
) -> None:
    # a GenerationTrainRecord has no task field: records with tasks come from a JSON Lines file in
    # the store's .datasets/ folder (Caikit's `file` source), the only place a path may name
    folder = tuning_store / ".datasets" / "caikit"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {**row, "task": task} for row, task in zip(fact_records(), ("geo", "history", "geo"), strict=True)
    ]
    rows.append(
        {"input": chat_prompt("Who wrote the Zorbian anthem?"), "output": "Mira Vell.", "task": "history"}
    )
    (folder / "two_tasks.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    stream = train_pb2.DataStreamSourceGenerationTrainRecord(
        file=common_pb2.FileReference(filename="caikit/two_tasks.jsonl")
    )
    request = _request(
        "caikit-mpt",
        train_stream=stream,
        tuning_type="MULTITASK_PROMPT_TUNING",
        num_epochs=2,
        batch_size=4,
        tuning_config=caikit_nlp_pb2.TuningConfig(
            num_virtual_tokens=4, prompt_tuning_init_method="TEXT", prompt_tuning_init_text="Answer:"
        ),
    )
    job = train.TextGenerationTaskPeftPromptTuningTrain(request, timeout=60)
    status = _wait(trainings, job.training_id)
    assert status.state == Status.COMPLETED, status.reasons
    assert len(_step_losses(channel, job.training_id)) == 2
    adapter = tuning_grpc.TuningStub(channel).GetAdapter(
        tuning_pb2.AdapterRequest(name="caikit-mpt"), timeout=30
    )
    assert adapter.versions[0].method == tuning_pb2.MULTITASK_PROMPT_TUNING
    answer = _generate(channel, "caikit-mpt")
    assert answer.generated_tokens > 0 and answer.generated_text


def test_cancel_a_queued_and_a_running_training(
    channel: grpc.Channel,
    train: train_grpc.NlpTrainingServiceStub,
    trainings: management_grpc.TrainingManagementStub,
) -> None:
    long = {"num_epochs": 200, "batch_size": 1}
    running = train.TextGenerationTaskPeftPromptTuningTrain(_request("caikit-long", **long), timeout=60)
    queued = train.TextGenerationTaskPeftPromptTuningTrain(_request("caikit-queued", **long), timeout=60)
    # one job runs at a time here: the second waits in the queue and is cancelled at once
    behind = trainings.CancelTraining(
        runtime_pb2.TrainingInfoRequest(training_id=queued.training_id), timeout=30
    )
    assert behind.state == Status.CANCELED and list(behind.reasons) == ["cancelled"]
    give_up = time.monotonic() + 120
    info = runtime_pb2.TrainingInfoRequest(training_id=running.training_id)
    while trainings.GetTrainingStatus(info, timeout=30).state == Status.QUEUED:
        assert time.monotonic() < give_up, "the training never started"
        time.sleep(0.1)
    stopped = trainings.CancelTraining(info, timeout=90)
    assert stopped.state == Status.CANCELED, stopped.reasons
    assert trainings.GetTrainingStatus(info, timeout=30).state == Status.CANCELED
    assert stopped.completion_timestamp.ToNanoseconds() > 0
    with pytest.raises(grpc.RpcError) as never:
        _generate(channel, "caikit-long")  # nothing was published
    assert never.value.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_training_ids_are_not_found(trainings: management_grpc.TrainingManagementStub) -> None:
    for training_id in ("ftjob-000000000000000000000000", "no-such-training", ""):
        request = runtime_pb2.TrainingInfoRequest(training_id=training_id)
        for call in (trainings.GetTrainingStatus, trainings.CancelTraining):
            with pytest.raises(grpc.RpcError) as missing:
                call(request, timeout=30)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND, training_id
            assert "no tuning job" in missing.value.details()


BAD_REQUESTS = [
    ({"base_model": "no-such-model"}, "parameters.base_model: "),
    ({"base_model": "all-MiniLM-L6-v2"}, "parameters.base_model: "),  # an encoder: not a causal LM
    ({"train_stream": _records([])}, "parameters.train_stream: "),
    ({"train_stream": train_pb2.DataStreamSourceGenerationTrainRecord()}, "parameters.train_stream: no data"),
    ({"train_stream": _records([{"input": "q", "output": ""}])}, "parameters.train_stream: "),
    (
        {"tuning_config": caikit_nlp_pb2.TuningConfig(num_virtual_tokens=0)},
        "parameters.tuning_config.num_virtual_tokens: ",
    ),
    (
        {"tuning_config": caikit_nlp_pb2.TuningConfig(num_virtual_tokens=5000)},
        "parameters.tuning_config.num_virtual_tokens: ",
    ),
    (
        {
            "tuning_config": caikit_nlp_pb2.TuningConfig(
                num_virtual_tokens=4, prompt_tuning_init_method="ZEROS"
            )
        },
        "parameters.tuning_config.prompt_tuning_init_method: ",
    ),
    (
        {"tuning_config": caikit_nlp_pb2.TuningConfig(num_virtual_tokens=4, output_model_types=["ENCODER"])},
        "parameters.tuning_config.output_model_types: ",
    ),
    ({"tuning_type": "LORA"}, "parameters.tuning_type: "),
    ({"learning_rate": -1.0}, "parameters.learning_rate: "),
    ({"num_epochs": 0}, "parameters.num_epochs: "),
    ({"torch_dtype": "bfloat16"}, "parameters.torch_dtype: "),
    ({"verbalizer": "no placeholder"}, "parameters.verbalizer: "),
    (
        {
            "train_stream": train_pb2.DataStreamSourceGenerationTrainRecord(
                directory=common_pb2.Directory(dirname="/tmp")
            )
        },
        "parameters.train_stream: the directory data source",
    ),
    # a file source names a path under the store's .datasets/ folder, never anywhere else
    (
        {
            "train_stream": train_pb2.DataStreamSourceGenerationTrainRecord(
                file=common_pb2.FileReference(filename="/etc/passwd")
            )
        },
        "parameters.train_stream: ",
    ),
    (
        {
            "train_stream": train_pb2.DataStreamSourceGenerationTrainRecord(
                file=common_pb2.FileReference(filename="../.jobs/jobs.sqlite")
            )
        },
        "parameters.train_stream: ",
    ),
    ({"val_stream": _records([{"input": "q", "output": ""}])}, "parameters.val_stream: "),
]


@pytest.mark.parametrize(("parameters", "expected"), BAD_REQUESTS)
def test_bad_requests_name_the_field_and_create_no_job(
    channel: grpc.Channel,
    train: train_grpc.NlpTrainingServiceStub,
    parameters: dict[str, object],
    expected: str,
) -> None:
    before = _job_count(channel)
    with pytest.raises(grpc.RpcError) as refused:
        train.TextGenerationTaskPeftPromptTuningTrain(_request("caikit-bad", **parameters), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(expected), refused.value.details()
    assert _job_count(channel) == before


def test_bad_model_names_and_output_paths(
    channel: grpc.Channel, train: train_grpc.NlpTrainingServiceStub
) -> None:
    before = _job_count(channel)
    cases = [
        (_request(""), "model_name: required"),
        (_request("bad name!"), "model_name: invalid adapter name"),
        (_request(DEFAULT_GENERATION_MODEL), "model_name: "),  # a model's id
    ]
    with_path = _request("caikit-s3")
    with_path.output_path.CopyFrom(common_pb2.S3Path(path="models/out", bucket="b"))
    cases.append((with_path, "output_path: not supported"))
    for request, expected in cases:
        with pytest.raises(grpc.RpcError) as refused:
            train.TextGenerationTaskPeftPromptTuningTrain(request, timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith(expected), refused.value.details()
    assert _job_count(channel) == before


def test_reflection_and_health_describe_the_training_services(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {
        "caikit.runtime.Nlp.NlpTrainingService",
        "caikit.runtime.training.TrainingManagement",
        "taskgate.tuning.Tuning",
    } <= services
    pool = DescriptorPool(database)
    method = pool.FindServiceByName("caikit.runtime.Nlp.NlpTrainingService").methods_by_name[
        "TextGenerationTaskPeftPromptTuningTrain"
    ]
    assert method.input_type.full_name == "caikit.runtime.Nlp.TextGenerationTaskPeftPromptTuningTrainRequest"
    assert method.output_type.full_name == "caikit_data_model.runtime.TrainingJob"
    parameters = method.input_type.fields_by_name["parameters"].message_type
    assert [(f.name, f.number) for f in parameters.fields][:4] == [
        ("base_model", 1),
        ("train_stream", 2),
        ("tuning_config", 3),
        ("val_stream", 4),
    ]
    stream = parameters.fields_by_name["train_stream"].message_type
    assert [f.name for f in stream.oneofs_by_name["data_stream"].fields] == [
        "jsondata",
        "file",
        "list_of_files",
        "directory",
        "s3files",
    ]
    status = pool.FindMessageTypeByName("caikit_data_model.runtime.TrainingStatusResponse")
    assert status.fields_by_name["state"].enum_type.full_name == "caikit_data_model.common.TrainingStatus"
    watch = pool.FindServiceByName("taskgate.tuning.Tuning").methods_by_name["WatchJob"]
    assert watch.server_streaming
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("caikit.runtime.Nlp.NlpTrainingService", "caikit.runtime.training.TrainingManagement"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_train_requests_have_the_deploy_size_limit(channel: grpc.Channel) -> None:
    """Training data rides inline: a train request larger than the task limit (128 KiB in these
    tests) reaches the servicer (refused here only for its unknown base model), a task request
    that large does not."""
    rows = [{"input": "x" * 1000, "output": "y"} for _ in range(300)]  # about 300 KiB
    request = _request("caikit-large", base_model="no-such-model", train_stream=_records(rows))
    assert request.ByteSize() > 256 * 1024
    with pytest.raises(grpc.RpcError) as refused:
        train_grpc.NlpTrainingServiceStub(channel).TextGenerationTaskPeftPromptTuningTrain(
            request, timeout=60
        )
    assert refused.value.details().startswith("parameters.base_model: "), refused.value.details()
    create = tuning_pb2.CreateJobRequest(
        name="large",
        method=tuning_pb2.PROMPT_TUNING,
        base_model="no-such-model",
        train=tuning_pb2.Data(inline=tuning_pb2.Records(records=[tuning_pb2.Record(**r) for r in rows])),
    )
    with pytest.raises(grpc.RpcError) as refused:
        tuning_grpc.TuningStub(channel).CreateJob(create, timeout=60)
    assert refused.value.details().startswith("base_model: "), refused.value.details()
    with pytest.raises(grpc.RpcError) as too_large:
        _generate(channel, DEFAULT_GENERATION_MODEL, text="x" * 300_000)
    assert too_large.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "larger than" in too_large.value.details()
