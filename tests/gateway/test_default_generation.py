"""The shipped default generation model as ``make run`` serves it: SmolLM2 on ORT GenAI's int4
graph (``onnx-genai-causal-lm``), over real sockets, through every door that generates.

The store is ``.cache/test-default-store`` with the default manifests exactly as
``taskgate init-store`` writes them (the other gateway tests pin SmolLM2 to the fp32 Optimum
runtime, see tests/models.py); its GGUF conversion is hard-linked from the test store's when
there is one, and the graph is built once (about 20 s) and kept between runs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import openai
import pytest

from gateway.models.defaults import DEFAULT_GENERATION_MODEL as SMOL
from gateway.models.defaults import write_default_manifests
from gateway.wire import caikit_data_model_nlp_pb2 as nlp_data
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from runtimes.gguf_convert import CONVERTED
from tests.conftest import GatewayThread, gateway_settings
from tests.models import CACHE

STORE = CACHE / "test-default-store"
META = (("mm-model-id", SMOL),)
pytestmark = pytest.mark.timeout(600)


def _chat(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def default_store(store: Path) -> Path:
    write_default_manifests(STORE)
    converted, seeded = store / SMOL / CONVERTED, STORE / SMOL / CONVERTED
    if converted.is_dir() and not seeded.exists():  # the fingerprint is checked on load as always
        shutil.copytree(converted, seeded, copy_function=os.link)
    return STORE


@pytest.fixture(scope="module")
def served(default_store: Path) -> Iterator[GatewayThread]:
    server = GatewayThread(gateway_settings(default_store))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub(served: GatewayThread) -> Iterator[nlp_grpc.NlpServiceStub]:
    with grpc.insecure_channel(served.gateway.addresses.grpc) as channel:
        yield nlp_grpc.NlpServiceStub(channel)


def _generate(stub: nlp_grpc.NlpServiceStub, text: str, tokens: int = 24) -> nlp_data.GeneratedTextResult:
    request = nlp.TextGenerationTaskRequest(text=text, max_new_tokens=tokens)
    result: nlp_data.GeneratedTextResult = stub.TextGenerationTaskPredict(request, metadata=META, timeout=300)
    return result


def test_the_shipped_manifest_names_the_genai_runtime(default_store: Path) -> None:
    manifest = json.loads((default_store / SMOL / "manifest.json").read_text())
    assert manifest["runtime"] == "onnx-genai-causal-lm"
    assert manifest["settings"]["precision"] == "auto"


def test_greedy_answers_to_fixed_questions_are_right_over_grpc(stub: nlp_grpc.NlpServiceStub) -> None:
    facts = {
        "What is the capital of France?": "Paris",
        "What is the capital of Japan?": "Tokyo",
        "How many days are there in a week?": "7",
        "What is 2+2?": "4",
    }
    for question, fact in facts.items():
        result = _generate(stub, _chat(question))
        assert fact in result.generated_text, (question, result.generated_text)
        assert result.finish_reason in (nlp_data.EOS_TOKEN, nlp_data.MAX_TOKENS)
        assert result.input_token_count > 5 and result.generated_tokens > 0


def test_streaming_gives_the_unary_text(stub: nlp_grpc.NlpServiceStub) -> None:
    prompt = _chat("Why is the sky blue?")
    request = nlp.ServerStreamingTextGenerationTaskRequest(text=prompt, max_new_tokens=20)
    chunks = list(stub.ServerStreamingTextGenerationTaskPredict(request, metadata=META, timeout=300))
    assert len(chunks) > 1
    unary = _generate(stub, prompt, 20)
    assert "".join(c.generated_text for c in chunks) == unary.generated_text
    assert chunks[-1].details.generated_tokens == unary.generated_tokens


def test_concurrent_streams_batch_together_and_each_gets_its_solo_answer(
    stub: nlp_grpc.NlpServiceStub,
) -> None:
    questions = [
        "What is the capital of France?",
        "Describe a walk through a busy market. Please answer in full sentences.",
        "What is 2+2?",
        "Write a poem about autumn leaves.",
        "How do bees make honey?",
        "Explain what a computer network is, with concrete examples and a friendly tone.",
        "Why is the sky blue?",
        "What is the capital of Japan?",
    ]
    solo = [_greedy_tokens(stub, _chat(q)) for q in questions]
    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(lambda q: _greedy_tokens(stub, _chat(q)), questions))
    for question, alone, batched in zip(questions, solo, together, strict=True):
        assert_same_greedy_answer(alone, batched, question)


def _greedy_tokens(stub: nlp_grpc.NlpServiceStub, text: str) -> list[tuple[str, float]]:
    """The greedy tokens of ``text`` (at most 16): each one's vocabulary entry and log-probability."""
    request = nlp.TextGenerationTaskRequest(
        text=text, max_new_tokens=16, generated_tokens=True, token_logprobs=True
    )
    result = stub.TextGenerationTaskPredict(request, metadata=META, timeout=300)
    tokens = [(token.text, token.logprob) for token in result.tokens]
    assert len(tokens) == result.generated_tokens > 0
    return tokens


def assert_same_greedy_answer(
    alone: list[tuple[str, float]], batched: list[tuple[str, float]], why: str
) -> None:
    """A row of a batch gets its solo answer, token for token with the same log-probabilities,
    except that the two may part at a near-tie. int4 MatMuls with int8 activations take another
    MLAS kernel for 8 rows than for one, which rounds differently (up to about 0.2 nats apart on an
    AVX2 machine; the same tokens on an AVX-512 one), and that can only flip the greedy choice
    where the top two tokens are that close: neither is then more likely than 0.65. A row reading
    another's cache, or a wrong position, parts at once and with confident tokens."""
    parted = next((i for i, (a, b) in enumerate(zip(alone, batched, strict=False)) if a[0] != b[0]), None)
    same = alone if parted is None else alone[:parted]
    assert [t for t, _ in same] == [t for t, _ in batched[: len(same)]], why
    np.testing.assert_allclose([lp for _, lp in same], [lp for _, lp in batched[: len(same)]], atol=0.25)
    if parted is None:
        assert len(alone) == len(batched), why
        return
    solo_choice, batch_choice = alone[parted][1], batched[parted][1]
    near_tie = max(solo_choice, batch_choice) <= math.log(0.65) and abs(solo_choice - batch_choice) <= 0.6
    assert near_tie, (why, parted, alone[parted], batched[parted])


def test_rest_and_openai_doors(served: GatewayThread) -> None:
    base = served.gateway.addresses.http
    with httpx.Client(base_url=base, timeout=120) as http:
        body = {
            "model_id": SMOL,
            "inputs": _chat("What is the capital of Japan?"),
            "parameters": {"max_new_tokens": 16},
        }
        response = http.post("/api/v1/task/text-generation", json=body)
        assert response.status_code == 200, response.text
        assert "Tokyo" in response.json()["generated_text"]
        info = {m["name"]: m for m in http.get("/info/models").json()["models"]}
        smol = info[SMOL]
        assert smol["module_id"] == "onnx-genai-causal-lm" and smol["loaded"]
        quantization = smol["metadata"]["quantization"]
        # auto: the 4-bit head where its probe passes (runtimes.genai_graph.AUTO_ORDER), else int4
        assert quantization["kind"] in ("int4-head4", "int4") and quantization["report"]["passed"] is True
    with openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        chat = client.chat.completions.create(
            model=SMOL,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
        assert "Paris" in (chat.choices[0].message.content or "")
        assert chat.usage is not None and chat.usage.completion_tokens > 0
