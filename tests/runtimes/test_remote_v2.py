"""The kserve-v2 runtime against a real remote: `taskgate kserve` serving MiniLM in its own
process, over REST (binary and JSON tensors) and gRPC. Tokenization stays local; the vectors
equal the local encoder's; every way the remote fails is RuntimeUnavailable with its reason."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from runtimes.base import RuntimeUnavailable, ThreadSettings, TokenizedBatch
from runtimes.onnx_encoder import OnnxEncoder
from runtimes.remote_v2 import RemoteV2Encoder
from tests.models import MINILM, minilm_source
from tests.served import REFUSALS, FakeV2Server, HostedKServe, SwitchableProxy

NAME = "minilm"
TEXTS = ["A man is eating food.", "The new movie is awesome and I loved every minute of it.", "ok"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@pytest.fixture(scope="module")
def hosted(store: Path) -> Iterator[HostedKServe]:
    server = HostedKServe(NAME, store / MINILM)
    yield server
    assert server.stop() == 0, server.said


@pytest.fixture(scope="module")
def local(store: Path) -> OnnxEncoder:
    encoder = OnnxEncoder(
        source=minilm_source(), work_dir=store / MINILM, options={}, threads=ThreadSettings()
    )
    encoder.load()
    return encoder


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a remote model's folder keeps: the tokenizer files and the length limit, no weights."""
    folder = tmp_path_factory.mktemp("remote-minilm")
    for name in (*TOKENIZER_FILES, "sentence_bert_config.json"):
        shutil.copy(minilm_source() / name, folder / name)
    return folder


def remote(folder: Path, **options: Any) -> RemoteV2Encoder:
    return RemoteV2Encoder(
        source=folder, work_dir=folder, options={"model_name": NAME, **options}, threads=ThreadSettings()
    )


def urls(hosted: HostedKServe) -> dict[str, dict[str, Any]]:
    return {
        "rest-binary": {"url": hosted.http},
        "rest-json": {"url": hosted.http, "binary": False},
        "grpc": {"url": f"grpc://{hosted.grpc}"},
    }


def with_deadline(batch: TokenizedBatch, seconds: float) -> TokenizedBatch:
    return TokenizedBatch(
        batch.input_ids,
        batch.attention_mask,
        batch.token_type_ids,
        batch.token_counts,
        time.monotonic() + seconds,
    )


@pytest.mark.parametrize("transport", ["rest-binary", "rest-json", "grpc"])
def test_vectors_equal_the_local_encoder(
    hosted: HostedKServe, local: OnnxEncoder, tokenizer_folder: Path, transport: str
) -> None:
    runtime = remote(tokenizer_folder, **urls(hosted)[transport])
    runtime.load()
    try:
        assert runtime.input_names == ("input_ids", "attention_mask", "token_type_ids")
        assert runtime.io_threads > 0 and runtime.head == "embedding" and runtime.max_tokens == 256
        assert runtime.size_bytes() < 2_000_000  # the tokenizer; the weights live remotely
        batch = runtime.tokenize(TEXTS, None)
        np.testing.assert_array_equal(batch.input_ids, local.tokenize(TEXTS, None).input_ids)
        vectors = runtime.run_batch(with_deadline(batch, 60))
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(vectors, local.run_batch(batch), atol=1e-5)
        assert [t.text for t in runtime.tokens("Hello, world!")] == ["Hello", ",", "world", "!"]
    finally:
        runtime.unload()


def test_load_fails_clearly_when_the_tensors_do_not_fit(hosted: HostedKServe, tokenizer_folder: Path) -> None:
    with pytest.raises(ValueError, match="has no output 'logits' \\(its outputs: embedding\\)"):
        remote(tokenizer_folder, url=hosted.http, output="logits").load()
    labels = ["negative", "positive"]
    with pytest.raises(ValueError, match="has 384 classes; 2 labels given"):
        remote(tokenizer_folder, url=f"grpc://{hosted.grpc}", head="classification", labels=labels).load()


@pytest.mark.parametrize("transport", ["rest-binary", "grpc"])
def test_an_unknown_remote_model_is_unavailable_with_the_remote_reason(
    hosted: HostedKServe, tokenizer_folder: Path, transport: str
) -> None:
    options = {**urls(hosted)[transport], "model_name": "no-such-model"}
    with pytest.raises(RuntimeUnavailable, match="no-such-model") as failure:
        remote(tokenizer_folder, **options).load()
    assert "404" in str(failure.value) or "NOT_FOUND" in str(failure.value), failure.value


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "ftp://x"}, "must start with http://"),
        ({}, "needs the setting 'url'"),
        ({"url": "http://x", "head": "classification"}, "needs 'labels'"),
        ({"url": "http://x", "labels": ["a"]}, "an embedding head takes none"),
        ({"url": "http://x", "timeout_s": 0}, "timeout_s"),
        ({"url": "http://x", "activation": "relu"}, "activation"),
    ],
)
def test_settings_are_checked(tokenizer_folder: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        remote(tokenizer_folder, **options)


@pytest.mark.parametrize("transport", ["rest-binary", "grpc"])
def test_a_silent_remote_is_unavailable_by_the_batch_deadline(
    hosted: HostedKServe, tokenizer_folder: Path, transport: str
) -> None:
    target = hosted.http.removeprefix("http://") if transport != "grpc" else hosted.grpc
    proxy = SwitchableProxy(target)
    url = f"http://{proxy.address}" if transport != "grpc" else f"grpc://{proxy.address}"
    runtime = remote(tokenizer_folder, url=url)
    runtime.load()
    try:
        batch = runtime.tokenize(TEXTS, None)
        assert runtime.run_batch(with_deadline(batch, 60)).shape == (3, 384)
        proxy.silence()  # accepts, reads, never answers
        with pytest.raises(RuntimeUnavailable, match=r"no answer within 0\.[0-9] s"):
            runtime.run_batch(with_deadline(batch, 0.8))
        with pytest.raises(RuntimeUnavailable, match="deadline passed before the remote was called"):
            runtime.run_batch(with_deadline(batch, -1))
    finally:
        runtime.unload()
        proxy.refuse()


@pytest.mark.parametrize("transport", ["rest-binary", "grpc"])
def test_a_gone_remote_is_unavailable_naming_the_refusal(
    hosted: HostedKServe, tokenizer_folder: Path, transport: str
) -> None:
    target = hosted.http.removeprefix("http://") if transport != "grpc" else hosted.grpc
    proxy = SwitchableProxy(target)
    url = f"http://{proxy.address}" if transport != "grpc" else f"grpc://{proxy.address}"
    runtime = remote(tokenizer_folder, url=url)
    runtime.load()
    try:
        proxy.refuse()
        with pytest.raises(RuntimeUnavailable, match=f"at {url}") as failure:
            runtime.run_batch(with_deadline(runtime.tokenize(TEXTS, None), 30))
        reason = str(failure.value)
        assert any(refusal in reason for refusal in REFUSALS), reason
    finally:
        runtime.unload()


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, b'{"error": "CUDA out of memory"}', "HTTP 500: CUDA out of memory"),
        (200, b"not json", "malformed answer"),
        (
            200,
            b'{"outputs": [{"name": "other", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            "no output",
        ),
        (
            200,
            b'{"outputs": [{"name": "embedding", "datatype": "FP32", "shape": [3, 2], "data": [1]}]}',
            "malformed",
        ),
        (
            200,
            b'{"outputs": [{"name": "embedding", "datatype": "FP32", "shape": [1, 384], "data": '
            + json.dumps([0.0] * 384).encode()
            + b"}]}",
            "has shape \\[1, 384\\]; expected \\[3, 384\\]",
        ),
    ],
    ids=["5xx", "not-json", "no-output", "data-not-fitting", "wrong-rows"],
)
def test_a_failing_or_malformed_answer_is_unavailable(
    tokenizer_folder: Path, status: int, body: bytes, message: str
) -> None:
    fake = FakeV2Server(status, body)
    runtime = remote(tokenizer_folder, url=fake.url, binary=False)
    try:
        runtime.load()
        assert runtime.input_names == ("input_ids", "attention_mask")  # no token types: none sent
        with pytest.raises(RuntimeUnavailable, match=message):
            runtime.run_batch(with_deadline(runtime.tokenize(TEXTS, None), 30))
    finally:
        runtime.unload()
        fake.close()


def test_a_hosted_classifier_serves_a_remote_classification_head(store: Path, tokenizer_folder: Path) -> None:
    from tests.models import CLASSIFIER, CLASSIFIER_LABELS, SOURCES

    hosted = HostedKServe("classifier", store / CLASSIFIER)
    try:
        metadata = httpx.get(f"{hosted.http}/v2/models/classifier", timeout=30).json()
        assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
        runtime = RemoteV2Encoder(
            source=tokenizer_folder,
            work_dir=tokenizer_folder,
            options={
                "url": f"grpc://{hosted.grpc}",
                "model_name": "classifier",
                "head": "classification",
                "labels": list(CLASSIFIER_LABELS),
            },
            threads=ThreadSettings(),
        )
        runtime.load()
        local = OnnxEncoder(
            source=SOURCES / CLASSIFIER, work_dir=store / CLASSIFIER, options={}, threads=ThreadSettings()
        )
        local.load()
        batch = runtime.tokenize(TEXTS, None)
        probabilities = runtime.run_batch(with_deadline(batch, 60))
        np.testing.assert_allclose(probabilities, local.run_batch(batch), atol=1e-5)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        runtime.unload()
    finally:
        assert hosted.stop() == 0, hosted.said
