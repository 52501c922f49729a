"""Task results (gateway.results) -> Caikit protobuf messages. Pure functions, no I/O."""

from __future__ import annotations

from google.protobuf import struct_pb2

from gateway.generation.results import GeneratedToken, GenerationOutput, StreamChunk
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


def _tokens(tokens: tuple[GeneratedToken, ...]) -> list[nlp.GeneratedToken]:
    return [nlp.GeneratedToken(text=t.text, logprob=t.logprob or 0.0, rank=t.rank or 0) for t in tokens]


def generated_text(out: GenerationOutput, producer_id: Producer) -> nlp.GeneratedTextResult:
    return nlp.GeneratedTextResult(
        generated_text=out.generated_text,
        generated_tokens=out.generated_tokens,
        finish_reason=out.finish_reason.name,
        producer_id=producer(producer_id),
        input_token_count=out.input_token_count,
        seed=out.seed or 0,
        tokens=_tokens(out.tokens),
        input_tokens=_tokens(out.input_tokens),
    )


def stream_chunk(chunk: StreamChunk, producer_id: Producer) -> nlp.GeneratedTextStreamResult:
    details = chunk.details
    return nlp.GeneratedTextStreamResult(
        generated_text=chunk.generated_text,
        tokens=_tokens(chunk.tokens),
        details=nlp.TokenStreamDetails(
            finish_reason=details.finish_reason.name,
            generated_tokens=details.generated_tokens,
            seed=details.seed or 0,
            input_token_count=details.input_token_count,
        ),
        producer_id=producer(producer_id),
        input_tokens=_tokens(chunk.input_tokens),
    )
