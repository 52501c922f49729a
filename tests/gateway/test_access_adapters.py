"""Tenants and tuned adapters on a real gateway started with API keys: a tenant's job records it
as the adapter's owner; the adapter serves its owner and is NOT_FOUND, like a missing one, to
other tenants over REST and gRPC, until a tenant that publishes publicly tunes one (here with
the official openai client); jobs are their owner's; an adapter name is its owner's."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import openai
import pytest
from google.protobuf import struct_pb2

from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL as MINILM
from gateway.models.defaults import write_default_manifests
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from gateway.wire import taskgate_tuning_pb2 as pb
from gateway.wire import taskgate_tuning_pb2_grpc as tuning_grpc
from tests.conftest import GatewayThread
from tests.gateway.access_keys import KEYS, bearer, grpc_key, keyed_gateway_on
from tests.models import pin_fp32_generation
from tests.tuning_data import topic_records

PRIVATE = "acme-topics"
PUBLIC = "shared-topics"
FAST = {"num_epochs": 2, "batch_size": 16, "learning_rate": 2e-3}
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def keyed_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    root = tmp_path_factory.mktemp("tenant-store")  # adapters and jobs of its own
    write_default_manifests(root)
    pin_fp32_generation(root)
    with keyed_gateway_on(root, tmp_path_factory.mktemp("keys")) as server:
        yield server


@pytest.fixture(scope="module")
def http(keyed_gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keyed_gateway.gateway.addresses.http, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def channel(keyed_gateway: GatewayThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(keyed_gateway.gateway.addresses.grpc) as chan:
        yield chan


@pytest.fixture(scope="module")
def published(keyed_gateway: GatewayThread, channel: grpc.Channel) -> dict[str, str]:
    """acme's job over gRPC (private), then ops' over the openai client (public): job ids."""
    tuning = tuning_grpc.TuningStub(channel)
    hyper = struct_pb2.Struct()
    hyper.update(FAST)
    rows = [pb.Record(text=r["text"], label=r["label"]) for r in topic_records(32, seed=1)]
    request = pb.CreateJobRequest(
        name=PRIVATE,
        method=pb.CLASSIFIER,
        base_model=MINILM,
        train=pb.Data(inline=pb.Records(records=rows)),
        hyperparameters=hyper,
    )
    private = tuning.CreateJob(request, metadata=grpc_key("acme"), timeout=60).id
    base = f"{keyed_gateway.gateway.addresses.http}/v1"
    with openai.OpenAI(base_url=base, api_key=KEYS["ops"], max_retries=0, timeout=120) as client:
        public = client.fine_tuning.jobs.create(
            model=MINILM,
            training_file=None,  # type: ignore[arg-type]
            suffix=PUBLIC,
            method={"type": "classifier", "classifier": {"hyperparameters": FAST}},  # type: ignore[typeddict-item]
            extra_body={"training_data": topic_records(32, seed=1)},
        ).id
    for job_id, tenant in ((private, "acme"), (public, "ops")):
        give_up = time.monotonic() + 300
        while True:
            job = tuning.GetJob(pb.JobRequest(job_id=job_id), metadata=grpc_key(tenant), timeout=30)
            if job.state in (pb.COMPLETED, pb.CANCELED, pb.ERRORED) or time.monotonic() > give_up:
                break
            time.sleep(0.2)
        assert job.state == pb.COMPLETED and job.result.version == 1, (job.state, job.reasons)
    return {PRIVATE: private, PUBLIC: public}


def _classify_rest(http: httpx.Client, model: str, tenant: str) -> httpx.Response:
    body = {"model_id": model, "inputs": "the striker scored a late goal"}
    return http.post("/api/v1/task/text-classification", json=body, headers=bearer(tenant))


def _classify_grpc(channel: grpc.Channel, model: str, tenant: str) -> grpc.StatusCode:
    stub = nlp_grpc.NlpServiceStub(channel)
    try:
        stub.TextClassificationTaskPredict(
            nlp.TextClassificationTaskRequest(text="the striker scored a late goal"),
            metadata=(("mm-model-id", model), *grpc_key(tenant)),
            timeout=120,
        )
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_the_owner_is_recorded_in_the_published_version(
    published: dict[str, str], http: httpx.Client
) -> None:
    for name, owner, public in ((PRIVATE, "acme", False), (PUBLIC, "ops", True)):
        about = http.get(f"/management/adapters/{name}", headers=bearer("ops")).json()
        extra = about["versions"][0]["extra"]
        assert (extra["owner"], extra["public"]) == (owner, public), extra
        assert about["versions"][0]["job_id"] == published[name]


def test_a_private_adapter_serves_its_owner_only(
    published: dict[str, str], http: httpx.Client, channel: grpc.Channel
) -> None:
    for model in (PRIVATE, f"{PRIVATE}@1"):
        mine = _classify_rest(http, model, "acme")
        assert mine.status_code == 200 and mine.json()["results"][0]["label"] in ("sports", "cooking"), (
            mine.text
        )
        assert _classify_grpc(channel, model, "acme") == grpc.StatusCode.OK
        # to others, exactly what a name nobody published answers
        nobodys = _classify_rest(http, model.replace(PRIVATE, "nobodys-topics"), "beta").json()["details"]
        for other in ("beta", "ops"):
            theirs = _classify_rest(http, model, other)
            assert theirs.status_code == 404, theirs.text
            assert theirs.json()["details"] == nobodys.replace("nobodys-topics", PRIVATE)
            assert _classify_grpc(channel, model, other) == grpc.StatusCode.NOT_FOUND


def test_a_public_adapter_serves_every_tenant(
    published: dict[str, str], http: httpx.Client, channel: grpc.Channel
) -> None:
    for tenant in ("acme", "beta", "gamma", "ops"):
        response = _classify_rest(http, PUBLIC, tenant)
        assert response.status_code == 200, (tenant, response.text)
        assert _classify_grpc(channel, f"{PUBLIC}@1", tenant) == grpc.StatusCode.OK


def test_jobs_and_adapter_names_belong_to_their_tenant(
    published: dict[str, str], channel: grpc.Channel
) -> None:
    tuning = tuning_grpc.TuningStub(channel)
    job = pb.JobRequest(job_id=published[PRIVATE])
    assert tuning.GetJob(job, metadata=grpc_key("acme"), timeout=30).name == PRIVATE
    with pytest.raises(grpc.RpcError) as hidden:
        tuning.GetJob(job, metadata=grpc_key("gamma"), timeout=30)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as not_cancelled:
        tuning.CancelJob(job, metadata=grpc_key("gamma"), timeout=30)
    assert not_cancelled.value.code() == grpc.StatusCode.NOT_FOUND

    def listed(tenant: str) -> set[str]:
        reply = tuning.ListJobs(pb.ListJobsRequest(page_size=100), metadata=grpc_key(tenant), timeout=30)
        return {j.id for j in reply.jobs}

    assert listed("acme") == {published[PRIVATE]}
    assert listed("ops") == {published[PUBLIC]}
    assert listed("gamma") == set()

    # another tenant may not publish a version of acme's adapter
    hyper = struct_pb2.Struct()
    hyper.update(FAST)
    rows = [pb.Record(text=r["text"], label=r["label"]) for r in topic_records(32, seed=2)]
    request = pb.CreateJobRequest(
        name=PRIVATE,
        method=pb.CLASSIFIER,
        base_model=MINILM,
        train=pb.Data(inline=pb.Records(records=rows)),
        hyperparameters=hyper,
    )
    with pytest.raises(grpc.RpcError) as taken:
        tuning.CreateJob(request, metadata=grpc_key("gamma"), timeout=60)
    assert taken.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "belongs to another tenant" in (taken.value.details() or "")
    assert listed("gamma") == set()  # no job was made


def test_listings_show_a_tenant_only_the_adapters_it_may_use(
    published: dict[str, str], http: httpx.Client
) -> None:
    """OpenAI's /v1/models and v2's /v2/models list another tenant's private adapter no more than
    they serve it; its card and v2 metadata are 404 to others, as for a name nobody published."""
    for tenant, sees_private in (("acme", True), ("beta", False), ("ops", False)):
        cards = http.get("/v1/models", headers=bearer(tenant))
        assert cards.status_code == 200, cards.text
        openai_ids = {card["id"] for card in cards.json()["data"]}
        v2 = http.get("/v2/models", headers=bearer(tenant))
        assert v2.status_code == 200, v2.text
        v2_names = set(v2.json()["models"])
        for listed in (openai_ids, v2_names):
            assert MINILM in listed and PUBLIC in listed, (tenant, listed)
            assert (PRIVATE in listed) is sees_private, (tenant, listed)
        expected = 200 if sees_private else 404
        assert http.get(f"/v1/models/{PRIVATE}", headers=bearer(tenant)).status_code == expected
        for path in (f"/v2/models/{PRIVATE}", f"/v2/models/{PRIVATE}/versions/1"):
            assert http.get(path, headers=bearer(tenant)).status_code == expected, (tenant, path)
