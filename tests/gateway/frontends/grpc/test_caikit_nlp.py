"""End to end over a real gRPC socket with generated stubs and the real models."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from gateway.wire import caikit_data_model_common_runtime_pb2 as runtime_pb2
from gateway.wire import caikit_runtime_info_pb2_grpc as info_grpc
from gateway.wire import caikit_runtime_nlp_pb2 as nlp
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from tests.models import CLASSIFIER, MINILM

META = (("mm-model-id", MINILM),)


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> nlp_grpc.NlpServiceStub:
    return nlp_grpc.NlpServiceStub(channel)


def _doc(**fields: object) -> struct_pb2.Struct:
    doc = struct_pb2.Struct()
    doc.update(fields)
    return doc


def test_embedding(stub: nlp_grpc.NlpServiceStub) -> None:
    result = stub.EmbeddingTaskPredict(nlp.EmbeddingTaskRequest(text="hello world"), metadata=META)
    values = np.array(result.result.data_npfloat32sequence.values)
    assert values.shape == (384,) and abs(np.linalg.norm(values) - 1) < 1e-4
    assert result.input_token_count == 4
    assert result.producer_id.name


def test_embeddings_keep_input_order(stub: nlp_grpc.NlpServiceStub) -> None:
    texts = ["first text", "a second, longer text", "third"]
    many = stub.EmbeddingTasksPredict(nlp.EmbeddingTasksRequest(texts=texts), metadata=META)
    assert len(many.results.vectors) == 3
    for text, vector in zip(texts, many.results.vectors, strict=True):
        one = stub.EmbeddingTaskPredict(nlp.EmbeddingTaskRequest(text=text), metadata=META)
        assert np.allclose(
            vector.data_npfloat32sequence.values, one.result.data_npfloat32sequence.values, atol=1e-5
        )


def test_truncation_over_grpc(stub: nlp_grpc.NlpServiceStub) -> None:
    request = nlp.EmbeddingTaskRequest(text="word " * 300, truncate_input_tokens=16)
    assert stub.EmbeddingTaskPredict(request, metadata=META).input_token_count == 16
    with pytest.raises(grpc.RpcError) as err:
        stub.EmbeddingTaskPredict(nlp.EmbeddingTaskRequest(text="word " * 300), metadata=META)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncate_input_tokens" in err.value.details()


def test_sentence_similarity(stub: nlp_grpc.NlpServiceStub) -> None:
    request = nlp.SentenceSimilarityTaskRequest(
        source_sentence="A cat sits.", sentences=["A kitten sits.", "Markets fell."]
    )
    scores = stub.SentenceSimilarityTaskPredict(request, metadata=META).result.scores
    assert len(scores) == 2 and scores[0] > scores[1]
    tasks = nlp.SentenceSimilarityTasksRequest(
        source_sentences=["A cat sits.", "Stocks"], sentences=["x", "y"]
    )
    assert len(stub.SentenceSimilarityTasksPredict(tasks, metadata=META).results) == 2


def test_rerank(stub: nlp_grpc.NlpServiceStub) -> None:
    request = nlp.RerankTaskRequest(
        query="capital of France",
        documents=[_doc(text="Bananas are yellow."), _doc(text="Paris is the capital of France.", id=3)],
        top_n=1,
    )
    result = stub.RerankTaskPredict(request, metadata=META).result
    assert result.query == "capital of France"
    assert [s.index for s in result.scores] == [1]
    assert result.scores[0].text == "Paris is the capital of France."
    assert result.scores[0].document["id"] == 3
    hidden = nlp.RerankTaskRequest(
        query="q", documents=[_doc(text="a")], return_documents=False, return_text=False, return_query=False
    )
    bare = stub.RerankTaskPredict(hidden, metadata=META).result
    assert bare.query == "" and bare.scores[0].text == "" and not bare.scores[0].HasField("document")
    tasks = nlp.RerankTasksRequest(queries=["fruit", "France"], documents=[_doc(text="a banana")])
    assert len(stub.RerankTasksPredict(tasks, metadata=META).results) == 2


def test_tokenization(stub: nlp_grpc.NlpServiceStub) -> None:
    result = stub.TokenizationTaskPredict(nlp.TokenizationTaskRequest(text="Hello world"), metadata=META)
    assert [(t.text, t.start, t.end) for t in result.results] == [("Hello", 0, 5), ("world", 6, 11)]
    assert result.token_count == 2


def test_text_classification(stub: nlp_grpc.NlpServiceStub) -> None:
    request = nlp.TextClassificationTaskRequest(text="a wonderful day")
    result = stub.TextClassificationTaskPredict(request, metadata=(("mm-model-id", CLASSIFIER),))
    assert {r.label for r in result.results} == {"negative", "positive"}
    assert sum(r.score for r in result.results) == pytest.approx(1.0, abs=1e-5)


def test_health(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "caikit.runtime.Nlp.NlpService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_info(channel: grpc.Channel) -> None:
    info = info_grpc.InfoServiceStub(channel)
    runtime = info.GetRuntimeInfo(runtime_pb2.RuntimeInfoRequest())
    assert runtime.runtime_version and "onnxruntime" in runtime.python_packages
    models = info.GetModelsInfo(runtime_pb2.ModelInfoRequest()).models
    by_name = {m.name: m for m in models}
    assert {MINILM, CLASSIFIER} <= set(by_name)
    assert by_name[MINILM].module_id == "onnx-encoder"
    only = info.GetModelsInfo(runtime_pb2.ModelInfoRequest(model_ids=[MINILM])).models
    assert [m.name for m in only] == [MINILM]


def test_reflection_describes_every_message(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {
        "caikit.runtime.Nlp.NlpService",
        "caikit.runtime.info.InfoService",
        "grpc.health.v1.Health",
    } <= services
    from google.protobuf.descriptor_pool import DescriptorPool

    pool = DescriptorPool(database)
    service = pool.FindServiceByName("caikit.runtime.Nlp.NlpService")
    assert "TextGenerationTaskPredict" in service.methods_by_name
    result = pool.FindMessageTypeByName("caikit_data_model.nlp.GeneratedTextResult")
    assert [f.name for f in result.fields][:3] == ["generated_text", "generated_tokens", "finish_reason"]
    embedding = pool.FindMessageTypeByName("caikit_data_model.caikit_nlp.EmbeddingResult")
    assert embedding.fields_by_name["result"].message_type.full_name == "caikit_data_model.common.Vector1D"


def test_a_document_holding_nan_is_invalid_argument(channel: grpc.Channel) -> None:
    """Found by the gRPC fuzzer: NaN in a Struct document was INTERNAL."""
    document = struct_pb2.Struct()
    document.update({"text": "a kitten", "score": float("nan")})
    stub = nlp_grpc.NlpServiceStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.RerankTaskPredict(
            nlp.RerankTaskRequest(query="cats", documents=[document]),
            metadata=(("mm-model-id", MINILM),),
            timeout=60,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
