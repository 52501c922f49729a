"""Taskgate's own tuning service (taskgate.tuning.Tuning) over a real gRPC socket: a classifier job
on MiniLM created, watched from the middle of its run to COMPLETED and served; resuming a watch;
cancel; paging; adapter versions and rollback; bad requests named by field, with no job created."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL
from gateway.wire import caikit_runtime_nlp_pb2 as nlp_pb2
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from gateway.wire import taskgate_tuning_pb2 as pb
from gateway.wire import taskgate_tuning_pb2_grpc as tuning_grpc
from tests.conftest import GatewayThread
from tests.tuning_data import topic_records

NAME = "grpc-topics"
FINISHED = (pb.COMPLETED, pb.CANCELED, pb.ERRORED)


@pytest.fixture(scope="module")
def channel(tuning_gateway: GatewayThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(tuning_gateway.gateway.addresses.grpc) as chan:
        yield chan


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> tuning_grpc.TuningStub:
    return tuning_grpc.TuningStub(channel)


def _struct(**values: Any) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _data(rows: list[dict[str, str]]) -> pb.Data:
    return pb.Data(inline=pb.Records(records=[pb.Record(text=r["text"], label=r["label"]) for r in rows]))


def _classifier(name: str = NAME, **fields: Any) -> pb.CreateJobRequest:
    values: dict[str, Any] = {
        "name": name,
        "method": pb.CLASSIFIER,
        "base_model": DEFAULT_EMBEDDING_MODEL,
        "train": _data(topic_records(64, seed=1)),
        "validation": _data(topic_records(24, seed=2, held_out=True)),
        "hyperparameters": _struct(num_epochs=10, batch_size=8, learning_rate=2e-3),
        **fields,
    }
    return pb.CreateJobRequest(**values)


def _until(stub: tuning_grpc.TuningStub, job_id: str, done: Any, timeout: float = 180) -> Any:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        job = stub.GetJob(pb.JobRequest(job_id=job_id), timeout=30)
        if done(job):
            return job
        assert job.state not in FINISHED, (job.state, job.reasons)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id}: condition not met in {timeout} s")


def _watch(stub: tuning_grpc.TuningStub, job_id: str, after_seq: int = 0) -> list[Any]:
    return list(stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after_seq), timeout=180))


def _job_count(stub: tuning_grpc.TuningStub) -> int:
    return len(stub.ListJobs(pb.ListJobsRequest(page_size=100), timeout=30).jobs)


def test_watch_from_the_middle_of_a_job_to_completed_then_served(
    stub: tuning_grpc.TuningStub, channel: grpc.Channel
) -> None:
    created = stub.CreateJob(_classifier(), timeout=60)
    assert created.state == pb.QUEUED and created.method == pb.CLASSIFIER and created.id.startswith("ftjob-")
    _until(stub, created.id, lambda job: job.HasField("progress"))

    updates = _watch(stub, created.id)
    first, last = updates[0], updates[-1]
    assert first.HasField("job") and first.job.state == pb.RUNNING
    assert 0 < first.job.progress.step < first.job.progress.total_steps  # attached mid-job
    events = [u.event for u in updates[1:-1]]
    assert all(u.HasField("event") for u in updates[1:-1]) and events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # stored, then live: none lost
    steps = [e.progress for e in events if e.HasField("progress")]
    total = steps[0].total_steps
    assert total == 80 and [p.step for p in steps] == list(range(1, total + 1))  # 64 / 8 x 10 epochs
    assert all(p.loss > 0 and p.learning_rate > 0 and p.eta_s >= 0 for p in steps)
    assert steps[-1].epoch == pytest.approx(10.0) and steps[-1].eta_s == 0
    assert events[-1].message == f"published {NAME}@1"

    assert last.HasField("job") and last.job.state == pb.COMPLETED, last.job.reasons
    job = last.job
    assert job.progress.step == job.progress.total_steps == total
    assert job.result.adapter == f"{NAME}@1" and job.result.version == 1
    assert job.validation.name == "val_accuracy" and job.validation.value >= 0.9
    assert job.result.metrics["val_accuracy"] == job.validation.value
    assert list(job.reasons) == [f"published {NAME}@1"]
    assert job.created_at.ToNanoseconds() < job.started_at.ToNanoseconds() < job.finished_at.ToNanoseconds()

    # resume a watch after a known event: only the later events, then the job as it ended
    resumed = _watch(stub, created.id, after_seq=len(events) - 2)
    assert [u.event.seq for u in resumed[1:-1]] == [len(events) - 1, len(events)]
    assert resumed[-1].job.state == pb.COMPLETED
    # cancelling a finished job answers it as it ended
    assert stub.CancelJob(pb.JobRequest(job_id=created.id), timeout=30).state == pb.COMPLETED

    classify = nlp_grpc.NlpServiceStub(channel).TextClassificationTaskPredict
    for row in topic_records(6, seed=3, held_out=True):
        request = nlp_pb2.TextClassificationTaskRequest(text=row["text"])
        answer = classify(request, metadata=(("mm-model-id", NAME),), timeout=60)
        assert answer.results[0].label == row["label"]


def test_cancel_a_running_job_and_watch_it_end(stub: tuning_grpc.TuningStub) -> None:
    slow = _struct(num_epochs=100, batch_size=4, learning_rate=1e-3)
    created = stub.CreateJob(_classifier("grpc-cancelled", hyperparameters=slow), timeout=60)
    _until(stub, created.id, lambda job: job.HasField("progress"))
    answered = stub.CancelJob(pb.JobRequest(job_id=created.id), timeout=30)
    assert answered.state in (pb.RUNNING, pb.CANCELED)
    updates = _watch(stub, created.id)
    assert updates[-1].job.state == pb.CANCELED and list(updates[-1].job.reasons) == ["cancelled"]
    assert any(u.event.message.startswith("cancel requested") for u in updates if u.HasField("event"))
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetAdapter(pb.AdapterRequest(name="grpc-cancelled"), timeout=30)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_second_version_paging_and_rollback(stub: tuning_grpc.TuningStub, channel: grpc.Channel) -> None:
    quick = _struct(num_epochs=1, batch_size=32, learning_rate=2e-3)
    gate = pb.Gate(metric="val_accuracy", threshold=0.0)
    second = stub.CreateJob(_classifier(hyperparameters=quick, gate=gate), timeout=60)
    done = _watch(stub, second.id)[-1].job
    assert done.state == pb.COMPLETED and done.result.adapter == f"{NAME}@2", done.reasons

    everything = stub.ListJobs(pb.ListJobsRequest(page_size=100), timeout=30)
    assert everything.next_page_token == "" and len(everything.jobs) >= 3
    paged: list[str] = []
    token = ""
    while True:
        page = stub.ListJobs(pb.ListJobsRequest(page_size=2, page_token=token), timeout=30)
        assert len(page.jobs) <= 2
        paged += [job.id for job in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert paged == [job.id for job in everything.jobs] and len(set(paged)) == len(paged)
    assert paged[0] == second.id  # newest first
    stamps = [job.created_at.ToNanoseconds() for job in everything.jobs]
    assert stamps == sorted(stamps, reverse=True)

    adapter = stub.GetAdapter(pb.AdapterRequest(name=NAME), timeout=30)
    assert adapter.current_version == 2 and [v.version for v in adapter.versions] == [1, 2]
    first = adapter.versions[0]
    assert first.reference == f"{NAME}@1" and first.method == pb.CLASSIFIER
    assert first.base_model == DEFAULT_EMBEDDING_MODEL and first.job_id and first.files
    assert first.metrics["val_accuracy"] >= 0.9 and first.created_at.ToNanoseconds() > 0
    listed = {a.name: a for a in stub.ListAdapters(pb.ListAdaptersRequest(), timeout=30).adapters}
    assert listed[NAME] == adapter

    back = stub.RollbackAdapter(pb.RollbackAdapterRequest(name=NAME, version=1), timeout=60)
    assert back.current_version == 1
    assert stub.GetAdapter(pb.AdapterRequest(name=NAME), timeout=30).current_version == 1
    row = topic_records(1, seed=4, held_out=True)[0]
    request = nlp_pb2.TextClassificationTaskRequest(text=row["text"])
    classify = nlp_grpc.NlpServiceStub(channel).TextClassificationTaskPredict
    assert classify(request, metadata=(("mm-model-id", NAME),), timeout=60).results[0].label == row["label"]

    for call, request_, code in (
        (stub.RollbackAdapter, pb.RollbackAdapterRequest(name=NAME, version=7), grpc.StatusCode.NOT_FOUND),
        (stub.GetAdapter, pb.AdapterRequest(name="no-such-adapter"), grpc.StatusCode.NOT_FOUND),
        (stub.GetAdapter, pb.AdapterRequest(name="bad name!"), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call(request_, timeout=30)
        assert refused.value.code() == code, refused.value.details()


BAD_JOBS = [
    ({"method": pb.METHOD_UNSPECIFIED}, "method: required"),
    ({"method": 99}, "method: required"),  # a value this server does not know
    ({"name": "bad name!"}, "name: "),
    ({"base_model": "no-such-model"}, "base_model: "),
    ({"method": pb.LORA}, "base_model: "),  # MiniLM is an encoder, LoRA tunes a causal LM
    ({"hyperparameters": _struct(learning_rate=-1)}, "hyperparameters.learning_rate: "),
    ({"hyperparameters": _struct(num_epochs=2.5)}, "hyperparameters.num_epochs: "),
    ({"hyperparameters": _struct(epochs=3)}, "hyperparameters: unknown hyper-parameter 'epochs'"),
    ({"train": pb.Data(inline=pb.Records())}, "train: "),
    ({"train": pb.Data()}, "train: "),
    ({"train": pb.Data(dataset="../../etc/passwd")}, "train: "),
    ({"train": pb.Data(file_id="file-0")}, "train: "),
    ({"train": _data([{"text": "a", "label": ""}])}, "train: "),
    ({"validation": pb.Data(inline=pb.Records(records=[pb.Record(input="q", output="a")]))}, "validation: "),
    ({"gate": pb.Gate(metric="bleu")}, "gate: "),
]


@pytest.mark.parametrize(("fields", "expected"), BAD_JOBS)
def test_bad_jobs_name_the_field_and_create_nothing(
    stub: tuning_grpc.TuningStub, fields: dict[str, Any], expected: str
) -> None:
    before = _job_count(stub)
    with pytest.raises(grpc.RpcError) as refused:
        stub.CreateJob(_classifier(**{"name": "grpc-bad", **fields}), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(expected), refused.value.details()
    assert _job_count(stub) == before


def test_unknown_jobs_and_bad_pages(stub: tuning_grpc.TuningStub) -> None:
    for job_id in ("ftjob-000000000000000000000000", "nope", ""):
        for call in (stub.GetJob, stub.CancelJob):
            with pytest.raises(grpc.RpcError) as missing:
                call(pb.JobRequest(job_id=job_id), timeout=30)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as missing:
            _watch(stub, job_id)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    for request, expected in (
        (pb.ListJobsRequest(page_size=500), "page_size: "),
        (pb.ListJobsRequest(page_size=-1), "page_size: "),
        (pb.ListJobsRequest(page_token="bogus"), "page_token: "),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListJobs(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith(expected)
