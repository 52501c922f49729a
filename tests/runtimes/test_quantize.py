"""Quantized variants chosen in the manifest, served through a real gateway on real models.

int8 MiniLM: a real quantized graph (MatMulInteger) whose embeddings stay within the cosine the
export measured; a threshold no int8 model meets refuses the variant with the figures; an
invalid value is a clear error. int4 SmolLM2: a real MatMulNBits graph that answers the fixed
question right with the chat template, alone and in a running batch. The store and its variants
are cached in .cache/test-quantized-store (tests/quantized_store.py): only a first run quantizes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnx
import openai
import pytest

from gateway.models.model_settings import check_settings
from runtimes import quantize
from tests.conftest import GatewayThread, gateway_settings
from tests.quantized_store import (
    ENCODER_EXPORT,
    FP32,
    INT4,
    INT8,
    INVALID,
    STRICT,
    STRICT_COSINE,
    build_quantized_store,
    seed_strict_variant,
)

# A first run quantizes MiniLM (~30 s) and SmolLM2 (~40 s) on a busy 2-core machine; the model
# loads while the request waits, so requests carry a deadline longer than that.
LOAD_WAIT = {"x-request-timeout-ms": "400000"}
TEXTS = [  # none of them in the export's probe set
    "A dog is running across the park.",
    "How tall is Mount Everest?",
    "The invoice is due at the end of the month.",
    "Les enfants jouent dans le jardin.",
    "Quantum computers use qubits instead of bits.",
    "I can't wait for the weekend!",
    "42",
    "The train from Boston arrives at 6:45 pm on platform 3.",
]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def store() -> Path:
    return build_quantized_store()


@pytest.fixture(scope="module")
def gateway(store: Path) -> Iterator[GatewayThread]:
    server = GatewayThread(gateway_settings(store))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.gateway.addresses.http, timeout=600) as client:
        yield client


def _embeddings(http: httpx.Client, model_id: str) -> np.ndarray:
    body = {"model_id": model_id, "inputs": TEXTS}
    reply = http.post("/api/v1/task/embedding-tasks", json=body, headers=LOAD_WAIT)
    assert reply.status_code == 200, reply.text
    return np.array([r["data"]["values"] for r in reply.json()["results"]["vectors"]], dtype=np.float32)


def _info(http: httpx.Client, model_id: str) -> dict:
    models = http.get("/info/models").json()["models"]
    return next(m for m in models if m["name"] == model_id)


@pytest.mark.timeout(900)
def test_int8_minilm_serves_a_quantized_graph_close_to_fp32(http: httpx.Client, store: Path) -> None:
    fp32, int8 = _embeddings(http, FP32), _embeddings(http, INT8)
    cosines = (fp32 * int8).sum(axis=1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(int8, axis=1))
    assert cosines.mean() >= 0.99 and cosines.min() >= quantize.DEFAULT_MIN_ROW_COSINE, cosines
    assert not np.allclose(fp32, int8, atol=1e-4)  # a different graph answered
    variant = store / INT8 / f"{ENCODER_EXPORT}-int8"
    ops = {
        node.op_type for node in onnx.load(str(variant / "model.onnx"), load_external_data=False).graph.node
    }
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    assert (variant / "model.onnx").stat().st_size < 0.7 * (
        store / INT8 / ENCODER_EXPORT / "model.onnx"
    ).stat().st_size
    # the measured figures, kept beside the variant and shown in the model's info
    report = json.loads((variant / quantize.REPORT).read_text())
    assert report["cosine_mean"] >= 0.99 and report["probe_sentences"] >= 32
    assert report["cosine_min"] <= report["cosine_mean"]
    shown = _info(http, INT8)["metadata"]["quantization"]
    assert shown["kind"] == "int8" and shown["report"]["cosine_mean"] == pytest.approx(report["cosine_mean"])
    assert "quantization" not in _info(http, FP32)["metadata"]
    # sentence similarity through the same variant agrees with fp32's ranking
    body = {"model_id": INT8, "inputs": {"source_sentence": TEXTS[1], "sentences": TEXTS}}
    quantized = http.post("/api/v1/task/sentence-similarity", json=body).json()["result"]["scores"]
    plain = http.post("/api/v1/task/sentence-similarity", json={**body, "model_id": FP32}).json()
    assert int(np.argmax(quantized)) == int(np.argmax(plain["result"]["scores"])) == 1


@pytest.mark.timeout(900)
def test_a_threshold_no_int8_model_meets_refuses_the_variant_saying_the_figures(
    http: httpx.Client, store: Path
) -> None:
    _embeddings(http, INT8)  # the variant exists (made by the first load of minilm-int8)
    seed_strict_variant(store)
    reply = http.post("/api/v1/task/embedding", json={"model_id": STRICT, "inputs": "hi"}, headers=LOAD_WAIT)
    assert reply.status_code == 503, reply.text
    message = reply.json()["details"]
    report = json.loads((store / INT8 / f"{ENCODER_EXPORT}-int8" / quantize.REPORT).read_text())
    assert "int8 variant refused" in message and str(STRICT_COSINE) in message
    assert f"mean {report['cosine_mean']:.5f}" in message and f"worst {report['cosine_min']:.5f}" in message
    assert _info(http, STRICT)["metadata"]["state"] == "FAILED"
    # the fp32 and int8 models of the same source still answer
    assert http.post("/api/v1/task/embedding", json={"model_id": INT8, "inputs": "hi"}).status_code == 200


def test_a_cached_variant_is_reused_and_a_new_threshold_judged_without_quantizing(
    http: httpx.Client, store: Path
) -> None:
    _embeddings(http, INT8)  # the variant exists
    exported = store / INT8 / ENCODER_EXPORT
    variant = exported.with_name(f"{ENCODER_EXPORT}-int8")
    inode, made = variant.stat().st_ino, (variant / "model.onnx").stat().st_mtime_ns
    made_with = json.loads((variant / quantize.FINGERPRINT).read_text())["settings"]
    options = {"pooling": made_with["pooling"], "max_tokens": made_with["max_tokens"], "min_row_cosine": 0.5}
    again, report = quantize.int8_variant(exported, min_cosine=0.5, **options)
    assert again == variant and report["min_cosine"] == 0.5
    with pytest.raises(
        quantize.QuantizationRefused, match=re.escape("threshold quantization_min_cosine 0.999999")
    ):
        quantize.int8_variant(exported, min_cosine=0.999999, **options)
    assert variant.stat().st_ino == inode and (variant / "model.onnx").stat().st_mtime_ns == made


def test_an_invalid_quantization_is_a_clear_manifest_error(http: httpx.Client) -> None:
    reply = http.post("/api/v1/task/embedding", json={"model_id": INVALID, "inputs": "hi"}, headers=LOAD_WAIT)
    assert reply.status_code == 503, reply.text
    assert "'quantization'" in reply.json()["details"] and "none, int8" in reply.json()["details"]
    assert "int3" in reply.json()["details"]


@pytest.mark.parametrize(
    ("runtime", "settings", "words"),
    [
        ("onnx-encoder", {"quantization": "int4"}, ["one of none, int8", "'int4'"]),
        ("onnx-causal-lm", {"quantization": "int8"}, ["one of none, int4", "'int8'"]),
        ("onnx-encoder", {"quantization": 8}, ["one of none, int8"]),
        ("onnx-encoder", {"quantization_min_cosine": 1.5}, ["(0, 1]"]),
        ("onnx-encoder", {"quantization_min_cosine_row": True}, ["(0, 1]"]),
        ("torch-causal-lm", {"quantization": "int4"}, ["unknown setting 'quantization'"]),
        ("kserve-v2", {"quantization": "int8"}, ["unknown setting 'quantization'"]),
        ("onnx-genai-causal-lm", {"precision": "int8"}, ["one of auto, int4, int4-head4, fp32", "'int8'"]),
        ("onnx-genai-causal-lm", {"quantization": "int4"}, ["unknown setting 'quantization'"]),
        ("onnx-genai-causal-lm", {"spinning": 1}, ["off, while_running, always", "true / false"]),
        ("onnx-causal-lm", {"precision": "int4"}, ["unknown setting 'precision'"]),
    ],
)
def test_quantization_settings_are_checked(runtime: str, settings: dict, words: list[str]) -> None:
    from gateway.errors import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        check_settings(runtime, settings)
    assert all(word in caught.value.message for word in words), caught.value.message
    check_settings("onnx-encoder", {"quantization": "none", "quantization_min_cosine": 0.98})
    check_settings("onnx-causal-lm", {"quantization": "int4", "eos_token": "<|im_end|>"})
    check_settings("onnx-genai-causal-lm", {"precision": "fp32", "spinning": True, "max_batch_size": 16})
    check_settings("onnx-genai-causal-lm", {"spinning": "while_running"})


@pytest.mark.timeout(900)
def test_int4_smollm2_answers_the_fixed_question_right(
    http: httpx.Client, gateway: GatewayThread, store: Path
) -> None:
    client = openai.OpenAI(
        base_url=f"{gateway.gateway.addresses.http}/v1", api_key="unused", timeout=600, max_retries=0
    )
    first = client.chat.completions.create(
        model=INT4, messages=QUESTION, max_tokens=24, temperature=0, extra_headers=LOAD_WAIT
    )
    answer = first.choices[0].message.content or ""
    assert "Paris" in answer, answer
    variant = store / INT4 / "onnx-text-generation-with-past-int4"
    graph = onnx.load(str(variant / "model.onnx"), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    assert any(node.op_type == "MatMulNBits" for node in graph.node)
    # every MatMul over a weight became 4-bit; those left multiply activations (attention)
    assert not [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    # lm_head too (the tied embedding's transpose, made a constant), at 8 bits, while the
    # embedding's Gather keeps reading the fp32 table
    (head,) = [n for n in graph.node if "logits" in n.output]
    assert head.op_type == "MatMulNBits"
    assert {a.name: a.i for a in head.attribute}["bits"] == quantize.INT4_SETTINGS["lm_head_bits"] == 8
    assert {a.name: a.i for a in head.attribute}["N"] == 49152
    assert [n.op_type for n in graph.node if "model.embed_tokens.weight" in n.input] == ["Gather"]
    (table,) = [i for i in graph.initializer if i.name == "model.embed_tokens.weight"]
    assert table.data_type == onnx.TensorProto.FLOAT and list(table.dims) == [49152, 576]
    report = json.loads((variant / quantize.REPORT).read_text())
    assert report["passed"] and all(q["int4_right"] for q in report["questions"] if q["fp32_right"])
    assert _info(http, INT4)["metadata"]["quantization"]["report"]["passed"] is True

    # a running batch (left padding, position ids, past keys and values of several rows) on
    # the quantized graph: every concurrent answer holds its fact
    questions = [
        ("What is the capital of France?", "Paris"),
        ("What is the capital of Japan?", "Tokyo"),
        ("What is the capital of France?", "Paris"),
        ("How many days are there in a week?", "7"),
    ]

    def ask(question: str) -> str:
        out = client.chat.completions.create(
            model=INT4, messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0
        )
        return out.choices[0].message.content or ""

    with ThreadPoolExecutor(len(questions)) as pool:
        answers = list(pool.map(ask, [q for q, _ in questions]))
    for (question, fact), text in zip(questions, answers, strict=True):
        assert fact.lower() in text.lower() or (fact == "7" and "seven" in text.lower()), (question, text)
