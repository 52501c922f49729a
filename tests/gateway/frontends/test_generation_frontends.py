"""Text generation end to end over real sockets with the real SmolLM2 (default manifest)."""

from __future__ import annotations

import json
import threading
import time

import grpc
import httpx
import pytest

from gateway.models.defaults import DEFAULT_GENERATION_MODEL as SMOL
from gateway.wire import caikit_data_model_nlp_pb2 as nlp_data
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

META = (("mm-model-id", SMOL),)
PROMPT = "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n"
# whichever test asks first loads SmolLM2, converting and exporting it on a fresh clone
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> nlp_grpc.NlpServiceStub:
    return nlp_grpc.NlpServiceStub(channel)


def test_unary_generation_over_grpc(stub: nlp_grpc.NlpServiceStub) -> None:
    request = nlp.TextGenerationTaskRequest(text=PROMPT, max_new_tokens=24)
    result = stub.TextGenerationTaskPredict(request, metadata=META, timeout=300)
    assert result.generated_text.strip()
    assert result.finish_reason in (nlp_data.EOS_TOKEN, nlp_data.MAX_TOKENS)
    assert 0 < result.generated_tokens <= 24 and result.input_token_count > 5
    greedy_again = stub.TextGenerationTaskPredict(request, metadata=META, timeout=300)
    assert greedy_again.generated_text == result.generated_text


def test_parameters_seed_and_stop_sequences_over_grpc(stub: nlp_grpc.NlpServiceStub) -> None:
    sampled = nlp.TextGenerationTaskRequest(
        text="Once upon a time",
        max_new_tokens=12,
        decoding_method="SAMPLING",
        seed=7,
        temperature=0.9,
        top_k=50,
    )
    first = stub.TextGenerationTaskPredict(sampled, metadata=META, timeout=300)
    second = stub.TextGenerationTaskPredict(sampled, metadata=META, timeout=300)
    assert first.generated_text == second.generated_text and first.seed == 7
    limited = nlp.TextGenerationTaskRequest(text="Count: 1, 2, 3,", max_new_tokens=3, min_new_tokens=3)
    out = stub.TextGenerationTaskPredict(limited, metadata=META, timeout=300)
    assert out.generated_tokens == 3 and out.finish_reason == nlp_data.MAX_TOKENS
    stop = nlp.TextGenerationTaskRequest(
        text="Count: 1, 2, 3,", max_new_tokens=20, stop_sequences=["5"], include_stop_sequence=False
    )
    stopped = stub.TextGenerationTaskPredict(stop, metadata=META, timeout=300)
    assert stopped.finish_reason == nlp_data.STOP_SEQUENCE and "5" not in stopped.generated_text


def test_streaming_over_grpc(stub: nlp_grpc.NlpServiceStub) -> None:
    request = nlp.ServerStreamingTextGenerationTaskRequest(text=PROMPT, max_new_tokens=16)
    chunks = list(stub.ServerStreamingTextGenerationTaskPredict(request, metadata=META, timeout=300))
    assert len(chunks) > 1
    assert chunks[-1].details.finish_reason in (nlp_data.EOS_TOKEN, nlp_data.MAX_TOKENS)
    assert all(c.details.finish_reason == nlp_data.NOT_FINISHED for c in chunks[:-1])
    unary = stub.TextGenerationTaskPredict(
        nlp.TextGenerationTaskRequest(text=PROMPT, max_new_tokens=16), metadata=META, timeout=300
    )
    assert "".join(c.generated_text for c in chunks) == unary.generated_text
    assert chunks[-1].details.generated_tokens == unary.generated_tokens


def test_cancelled_stream_frees_its_slot(stub: nlp_grpc.NlpServiceStub, http: httpx.Client) -> None:
    request = nlp.ServerStreamingTextGenerationTaskRequest(text="Tell a long story.", max_new_tokens=200)
    call = stub.ServerStreamingTextGenerationTaskPredict(request, metadata=META, timeout=300)
    next(call)  # the sequence is running
    call.cancel()
    deadline = time.monotonic() + 30
    while http.get(f"/management/models/{SMOL}").json()["inflight"]:
        assert time.monotonic() < deadline, "the cancelled stream still holds the model"
        time.sleep(0.05)


def test_generation_errors(stub: nlp_grpc.NlpServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as bad:
        stub.TextGenerationTaskPredict(
            nlp.TextGenerationTaskRequest(text="x", decoding_method="BEAM"), metadata=META, timeout=60
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as wrong_task:
        stub.TextGenerationTaskPredict(
            nlp.TextGenerationTaskRequest(text="x"),
            metadata=(("mm-model-id", "all-MiniLM-L6-v2"),),
            timeout=60,
        )
    assert wrong_task.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as empty:
        list(
            stub.ServerStreamingTextGenerationTaskPredict(
                nlp.ServerStreamingTextGenerationTaskRequest(text=""), metadata=META, timeout=60
            )
        )
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_max_time_ends_with_time_limit_and_partial_text(stub: nlp_grpc.NlpServiceStub) -> None:
    request = nlp.TextGenerationTaskRequest(text="Tell a long story.", max_new_tokens=500, max_time=0.5)
    result = stub.TextGenerationTaskPredict(request, metadata=META, timeout=300)
    # the time limit, not the token count, ended it, with the text generated so far
    assert result.finish_reason == nlp_data.TIME_LIMIT
    assert 0 < result.generated_tokens < 500 and result.generated_text


def test_grpc_deadline_with_nothing_generated_is_deadline_exceeded(stub: nlp_grpc.NlpServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as late:
        stub.TextGenerationTaskPredict(
            nlp.TextGenerationTaskRequest(text="Tell a long story.", max_new_tokens=50),
            metadata=META,
            timeout=0.001,
        )
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_unary_and_streaming_over_rest(http: httpx.Client) -> None:
    body = {"model_id": SMOL, "inputs": PROMPT, "parameters": {"max_new_tokens": 16}}
    unary = http.post("/api/v1/task/text-generation", json=body)
    assert unary.status_code == 200, unary.text
    result = unary.json()
    assert result["finish_reason"] in ("EOS_TOKEN", "MAX_TOKENS") and result["generated_text"]
    events = []
    with http.stream("POST", "/api/v1/task/server-streaming-text-generation", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    assert "".join(e["generated_text"] for e in events) == result["generated_text"]
    assert events[-1]["details"]["finish_reason"] == result["finish_reason"]
    bad = http.post(
        "/api/v1/task/server-streaming-text-generation",
        json={"model_id": SMOL, "inputs": "x", "parameters": {"max_new_tokens": 0}},
    )
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("text/event-stream")
    error = json.loads(bad.text.removeprefix("data: "))  # one SSE event, as Caikit's clients read it
    assert error["code"] == 400 and "max_new_tokens" in error["details"] and error["id"]
    unknown = http.post("/api/v1/task/text-generation", json={**body, "parameters": {"beams": 2}})
    assert unknown.status_code == 400


def test_concurrent_requests_share_the_running_batch(stub: nlp_grpc.NlpServiceStub) -> None:
    prompts = ["The sky is", "Water boils at", "Python is a"]
    alone = [
        stub.TextGenerationTaskPredict(
            nlp.TextGenerationTaskRequest(text=p, max_new_tokens=10), metadata=META, timeout=300
        ).generated_text
        for p in prompts
    ]
    together: list[str] = [""] * len(prompts)

    def run(index: int) -> None:
        time.sleep(0.15 * index)  # join the running batch at different steps
        together[index] = stub.TextGenerationTaskPredict(
            nlp.TextGenerationTaskRequest(text=prompts[index], max_new_tokens=10), metadata=META, timeout=300
        ).generated_text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone
