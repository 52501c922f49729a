"""A gateway serving models whose weights live on a remote KServe v2 server (`taskgate kserve`
in its own process), over REST and gRPC, beside a local model: Caikit's embedding route gives the
local model's vectors; tokenization stays in the gateway; a remote that is gone is 503 /
UNAVAILABLE naming why; a remote that never answers ends by the request's deadline while the
local model keeps answering."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.conftest import GatewayThread, gateway_settings
from tests.models import MINILM, minilm_source
from tests.served import REFUSALS, FakeV2Server, HostedKServe, SwitchableProxy

TEXTS = ["A man is eating food.", "The new movie is awesome.", "Rust and Python are languages."]
TOKENIZER_FILES = (
    "tokenizer.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "sentence_bert_config.json",
)
TASKS = ["embedding", "sentence-similarity", "tokenization"]


def write_remote(store: Path, model_id: str, settings: dict[str, Any], tasks: list[str] = TASKS) -> None:
    """A kserve-v2 model folder: a manifest and the tokenizer files, no weights."""
    folder = store / model_id
    folder.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_source() / name, folder / name)
    manifest = {"id": model_id, "tasks": tasks, "runtime": "kserve-v2", "source": ".", "settings": settings}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def hosted(store: Path) -> Iterator[HostedKServe]:
    server = HostedKServe("minilm", store / MINILM)
    yield server
    assert server.stop() == 0, server.said


@pytest.fixture(scope="module")
def doomed(store: Path) -> Iterator[HostedKServe]:
    """A second remote, killed by a test."""
    server = HostedKServe("minilm", store / MINILM)
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def silent(hosted: HostedKServe) -> Iterator[SwitchableProxy]:
    proxy = SwitchableProxy(hosted.http.removeprefix("http://"))
    yield proxy
    proxy.refuse()


@pytest.fixture(scope="module")
def failing() -> Iterator[FakeV2Server]:
    """A remote that is ready but answers every inference 500."""
    server = FakeV2Server(500, b'{"error": "the accelerator fell over"}')
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    store: Path,
    hosted: HostedKServe,
    doomed: HostedKServe,
    silent: SwitchableProxy,
    failing: FakeV2Server,
) -> Iterator[GatewayThread]:
    remote_store = tmp_path_factory.mktemp("remote-store")
    (remote_store / MINILM).symlink_to(store / MINILM)  # the local model and its cached export
    write_remote(remote_store, "minilm-rest", {"url": hosted.http, "model_name": "minilm"})
    write_remote(remote_store, "minilm-grpc", {"url": f"grpc://{hosted.grpc}", "model_name": "minilm"})
    write_remote(remote_store, "doomed-rest", {"url": doomed.http, "model_name": "minilm"})
    write_remote(remote_store, "doomed-grpc", {"url": f"grpc://{doomed.grpc}", "model_name": "minilm"})
    write_remote(remote_store, "minilm-silent", {"url": f"http://{silent.address}", "model_name": "minilm"})
    write_remote(remote_store, "failing", {"url": failing.url, "model_name": "minilm"}, ["embedding"])
    write_remote(
        remote_store, "wrong-output", {"url": hosted.http, "model_name": "minilm", "output": "logits"}
    )
    write_remote(remote_store, "typo", {"url": hosted.http, "model_name": "minilm", "time_out": 3})
    server = GatewayThread(gateway_settings(remote_store))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.gateway.addresses.http, timeout=120) as http:
        yield http


def embed(client: httpx.Client, model_id: str, text: str, timeout_ms: int | None = None) -> httpx.Response:
    headers = {"x-request-timeout-ms": str(timeout_ms)} if timeout_ms else {}
    return client.post("/api/v1/task/embedding", json={"model_id": model_id, "inputs": text}, headers=headers)


def vector(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array(response.json()["result"]["data"]["values"], dtype=np.float32)


@pytest.mark.parametrize("model_id", ["minilm-rest", "minilm-grpc"])
def test_remote_embeddings_equal_the_local_model(client: httpx.Client, model_id: str) -> None:
    for text in TEXTS:
        np.testing.assert_allclose(
            vector(embed(client, model_id, text)), vector(embed(client, MINILM, text)), atol=1e-5
        )
    body = {"model_id": model_id, "inputs": {"source_sentences": TEXTS[:1], "sentences": TEXTS}}
    remote = client.post("/api/v1/task/sentence-similarity-tasks", json=body)
    local = client.post("/api/v1/task/sentence-similarity-tasks", json={**body, "model_id": MINILM})
    assert remote.status_code == 200, remote.text
    assert remote.json()["results"][0]["scores"] == pytest.approx(
        local.json()["results"][0]["scores"], abs=1e-5
    )


def test_concurrent_requests_are_batched_to_the_remote(client: httpx.Client) -> None:
    texts = [f"sentence number {i}" for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        remote = list(pool.map(lambda text: vector(embed(client, "minilm-grpc", text)), texts))
    local = [vector(embed(client, MINILM, text)) for text in texts]
    np.testing.assert_allclose(np.stack(remote), np.stack(local), atol=1e-5)


def test_a_killed_remote_is_503_and_unavailable_naming_why(
    gateway: GatewayThread, client: httpx.Client, doomed: HostedKServe
) -> None:
    for model_id in ("doomed-rest", "doomed-grpc"):
        assert embed(client, model_id, "loaded while the remote lives").status_code == 200
    doomed.stop(signal.SIGKILL)
    for model_id in ("doomed-rest", "doomed-grpc"):
        failed = embed(client, model_id, "and now?")
        assert failed.status_code == 503, failed.text
        details = failed.json()["details"]
        assert f"model {model_id!r} is unavailable: remote model 'minilm' at" in details, details
        assert any(refusal in details for refusal in REFUSALS), details
        # tokenization stays in the gateway: it works with the remote down
        tokens = client.post(
            "/api/v1/task/tokenization", json={"model_id": model_id, "inputs": "Hello, world!"}
        )
        assert tokens.status_code == 200, tokens.text
        assert [t["text"] for t in tokens.json()["results"]] == ["Hello", ",", "world", "!"]
    with grpc.insecure_channel(gateway.gateway.addresses.grpc) as channel:
        stub = nlp_grpc.NlpServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.EmbeddingTaskPredict(
                nlp.EmbeddingTaskRequest(text="hi"), metadata=(("mm-model-id", "doomed-grpc"),), timeout=60
            )
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "remote model 'minilm' at grpc://" in str(failure.value.details())


def test_a_remote_that_never_answers_ends_by_the_deadline_and_local_models_still_answer(
    gateway: GatewayThread, client: httpx.Client, silent: SwitchableProxy
) -> None:
    assert embed(client, "minilm-silent", "loaded while the remote answers").status_code == 200
    silent.silence()
    # more hanging requests than the gateway has model threads (2): none of them may hold the
    # threads the local model runs on
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        hanging = [pool.submit(embed, client, "minilm-silent", f"text {i}", 4000) for i in range(4)]
        local = [vector(embed(client, MINILM, text)) for text in TEXTS]
        assert not any(request.done() for request in hanging)  # answered while the remote hangs
        with grpc.insecure_channel(gateway.gateway.addresses.grpc) as channel:
            stub = nlp_grpc.NlpServiceStub(channel)
            with pytest.raises(grpc.RpcError) as failure:
                stub.EmbeddingTaskPredict(
                    nlp.EmbeddingTaskRequest(text="hi"),
                    metadata=(("mm-model-id", "minilm-silent"),),
                    timeout=1,
                )
        ended = [request.result() for request in hanging]
    assert len(local) == 3
    assert failure.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    for response in ended:
        assert response.status_code in (503, 504), response.text
        details = response.json()["details"]
        assert "deadline" in details or "no answer within" in details, details


@pytest.mark.parametrize(
    ("model_id", "reason"),
    [
        ("wrong-output", "has no output 'logits' (its outputs: embedding)"),
        ("typo", "unknown setting 'time_out' for runtime 'kserve-v2'"),
    ],
)
def test_a_remote_model_that_cannot_be_served_says_why(
    client: httpx.Client, model_id: str, reason: str
) -> None:
    failed = embed(client, model_id, "hi")
    assert failed.status_code == 503, failed.text
    assert reason in failed.json()["details"], failed.text


def test_a_failing_remote_fails_the_whole_batch_in_one_call(
    client: httpx.Client, failing: FakeV2Server
) -> None:
    body = {"model_id": "failing", "inputs": ["one", "two", "three"]}  # one length bucket: one batch
    failed = client.post("/api/v1/task/embedding-tasks", json=body)
    assert failed.status_code == 503, failed.text
    assert "HTTP 500: the accelerator fell over" in failed.json()["details"], failed.text
    assert failing.infer_calls == 1  # not retried row by row: the remote is down for every row
