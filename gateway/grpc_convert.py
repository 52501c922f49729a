"""Task results (gateway.results) -> Caikit protobuf messages. Pure functions, no I/O."""

from __future__ import annotations

from google.protobuf import struct_pb2

from gateway.results import (
    ClassificationOutput,
    EmbeddingOutput,
    Producer,
    RerankOutput,
    SimilarityOutput,
    TokenizationOutput,
)
from gateway.wire import caikit_data_model_caikit_nlp_pb2 as cnlp
from gateway.wire import caikit_data_model_common_pb2 as common
from gateway.wire import caikit_data_model_nlp_pb2 as nlp


def producer(value: Producer) -> common.ProducerId:
    return common.ProducerId(name=value.name, version=value.version)


def embedding(out: EmbeddingOutput) -> cnlp.EmbeddingResult:
    vector = out.vectors[0]
    return cnlp.EmbeddingResult(
        result=common.Vector1D(data_npfloat32sequence=common.NpFloat32Sequence(values=vector.tolist())),
        producer_id=producer(out.producer),
        input_token_count=out.input_token_count,
    )


def embeddings(out: EmbeddingOutput) -> cnlp.EmbeddingResults:
    vectors = [
        common.Vector1D(data_npfloat32sequence=common.NpFloat32Sequence(values=v.tolist()))
        for v in out.vectors
    ]
    return cnlp.EmbeddingResults(
        results=common.ListOfVector1D(vectors=vectors),
        producer_id=producer(out.producer),
        input_token_count=out.input_token_count,
    )


def similarity(out: SimilarityOutput) -> cnlp.SentenceSimilarityResult:
    return cnlp.SentenceSimilarityResult(
        result=cnlp.SentenceSimilarityScores(scores=out.scores[0]),
        producer_id=producer(out.producer),
        input_token_count=out.input_token_count,
    )


def similarities(out: SimilarityOutput) -> cnlp.SentenceSimilarityResults:
    return cnlp.SentenceSimilarityResults(
        results=[cnlp.SentenceSimilarityScores(scores=row) for row in out.scores],
        producer_id=producer(out.producer),
        input_token_count=out.input_token_count,
    )


def _rerank_scores(out: RerankOutput, row: int) -> cnlp.RerankScores:
    scores = []
    for item in out.scores[row]:
        score = cnlp.RerankScore(index=item.index, score=item.score, text=item.text or "")
        if item.document is not None:
            document = struct_pb2.Struct()
            document.update(item.document)
            score.document.CopyFrom(document)
        scores.append(score)
    return cnlp.RerankScores(query=out.queries[row] or "", scores=scores)


def rerank(out: RerankOutput) -> cnlp.RerankResult:
    return cnlp.RerankResult(
        result=_rerank_scores(out, 0),
        producer_id=producer(out.producer),
        input_token_count=out.input_token_count,
    )


def reranks(out: RerankOutput) -> cnlp.RerankResults:
    return cnlp.RerankResults(
        results=[_rerank_scores(out, row) for row in range(len(out.scores))],
        producer_id=producer(out.producer),
        input_token_count=out.input_token_count,
    )


def tokenization(out: TokenizationOutput) -> nlp.TokenizationResults:
    return nlp.TokenizationResults(
        results=[nlp.Token(start=t.start, end=t.end, text=t.text) for t in out.tokens],
        token_count=out.token_count,
    )


def classification(out: ClassificationOutput) -> nlp.ClassificationResults:
    return nlp.ClassificationResults(
        results=[nlp.ClassificationResult(label=label, score=score) for label, score in out.labels]
    )
