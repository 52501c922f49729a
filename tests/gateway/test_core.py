"""The protocol-neutral core on the real models, with no transport in between."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from gateway.core import RequestContext, TaskService
from gateway.errors import (
    DeadlineExceeded,
    InternalError,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    PayloadTooLarge,
    TaskNotSupported,
    Unavailable,
)
from gateway.models.registry import ModelRegistry
from gateway.models.store import ModelStore
from gateway.settings import RequestLimits
from runtimes.base import ThreadSettings
from tests.models import CLASSIFIER, CLASSIFIER_LABELS, MINILM, MISSING_SOURCE, SHORT_POSITIONS

CTX = RequestContext(request_id="test")


@pytest.fixture(scope="module")
async def core(store: Path) -> AsyncIterator[TaskService]:
    registry = ModelRegistry(ModelStore(store), ThreadSettings())
    service = TaskService(registry, RequestLimits(max_inputs=8, max_text_chars=2000), ThreadSettings())
    yield service
    await service.close()


async def test_embedding_is_a_unit_vector_with_token_count(core: TaskService) -> None:
    out = await core.embed(CTX, MINILM, ["hello world"], None)
    assert len(out.vectors) == 1 and out.vectors[0].shape == (384,)
    assert abs(float(np.linalg.norm(out.vectors[0])) - 1.0) < 1e-5
    assert out.input_token_count == 4  # [CLS] hello world [SEP]


async def test_similarity_ranks_the_paraphrase_first(core: TaskService) -> None:
    out = await core.similarity(
        CTX, MINILM, ["A cat sits on the mat."], ["A kitten rests on a rug.", "Stock prices fell."], None
    )
    close, far = out.scores[0]
    assert close > far
    single = await core.embed(CTX, MINILM, ["A cat sits on the mat.", "A kitten rests on a rug."], None)
    assert close == pytest.approx(float(single.vectors[0] @ single.vectors[1]), abs=1e-5)


async def test_rerank_orders_top_n_and_honours_return_flags(core: TaskService) -> None:
    docs = [{"text": "Paris is the capital of France.", "id": 7}, {"text": "Bananas are yellow."}]
    full = await core.rerank(
        CTX,
        MINILM,
        ["capital of France"],
        docs,
        top_n=None,
        truncate=None,
        return_documents=True,
        return_query=True,
        return_text=True,
    )
    assert [s.index for s in full.scores[0]] == [0, 1]
    assert full.scores[0][0].document == docs[0]
    assert full.scores[0][0].text == docs[0]["text"]
    assert full.queries == ["capital of France"]
    bare = await core.rerank(
        CTX,
        MINILM,
        ["capital of France", "fruit"],
        docs,
        top_n=1,
        truncate=None,
        return_documents=False,
        return_query=False,
        return_text=False,
    )
    assert [len(row) for row in bare.scores] == [1, 1]
    assert bare.scores[1][0].index == 1
    assert bare.scores[0][0].document is None and bare.scores[0][0].text is None
    assert bare.queries == [None, None]


async def test_tokenization_and_classification(core: TaskService) -> None:
    tokens = await core.tokenize(CTX, MINILM, "Hello world")
    assert [(t.text, t.start, t.end) for t in tokens.tokens] == [("Hello", 0, 5), ("world", 6, 11)]
    assert tokens.token_count == 2
    out = await core.classify(CTX, CLASSIFIER, "What a great day")
    assert sorted(label for label, _ in out.labels) == sorted(CLASSIFIER_LABELS)
    assert sum(score for _, score in out.labels) == pytest.approx(1.0, abs=1e-5)
    assert out.labels[0][1] >= out.labels[1][1]


async def test_truncate_input_tokens_semantics(core: TaskService) -> None:
    text = "word " * 300
    with pytest.raises(InvalidInput, match="truncate_input_tokens"):
        await core.embed(CTX, MINILM, [text], None)
    with pytest.raises(InvalidInput, match="truncate_input_tokens"):
        await core.embed(CTX, MINILM, [text], 0)
    assert (await core.embed(CTX, MINILM, [text], 20)).input_token_count == 20
    assert (await core.embed(CTX, MINILM, [text], -1)).input_token_count == 256
    assert (await core.embed(CTX, MINILM, [text], 100000)).input_token_count == 256
    assert (await core.embed(CTX, MINILM, [text], 1)).input_token_count == 2


@pytest.mark.parametrize(
    ("texts", "error"),
    [
        ([], InvalidInput),
        ([""], InvalidInput),
        (["  "], InvalidInput),
        (["x"] * 9, PayloadTooLarge),
        (["x" * 2001], PayloadTooLarge),
    ],
)
async def test_bad_input_is_refused_before_the_model(
    core: TaskService, texts: list[str], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await core.embed(CTX, MINILM, texts, None)


async def test_documents_need_text(core: TaskService) -> None:
    with pytest.raises(InvalidInput, match=r"documents\[1\]"):
        await core.rerank(
            CTX,
            MINILM,
            ["q"],
            [{"text": "a"}, {"title": "b"}],
            top_n=None,
            truncate=None,
            return_documents=True,
            return_query=True,
            return_text=True,
        )


async def test_model_and_task_errors(core: TaskService) -> None:
    with pytest.raises(ModelNotFound):
        await core.embed(CTX, "no-such-model", ["x"], None)
    with pytest.raises(TaskNotSupported, match="text-classification"):
        await core.classify(CTX, MINILM, "x")
    with pytest.raises(TaskNotSupported, match="embedding"):
        await core.embed(CTX, CLASSIFIER, ["x"], None)
    with pytest.raises(Unavailable, match="failed to load"):
        await core.embed(CTX, MISSING_SOURCE, ["x"], None)
    status = {s.model_id: s for s in await core.registry.status()}
    assert status[MISSING_SOURCE].state == "FAILED" and status[MISSING_SOURCE].reason


async def test_runtime_failure_is_internal_with_the_request_id(core: TaskService) -> None:
    ok = await core.embed(CTX, SHORT_POSITIONS, ["short"], None)
    assert ok.vectors[0].shape == (32,)
    with pytest.raises(InternalError, match="req-42"):
        await core.embed(RequestContext("req-42"), SHORT_POSITIONS, ["word " * 40], None)


async def test_expired_deadline_is_refused_before_the_model(core: TaskService) -> None:
    expired = RequestContext("late", deadline=time.monotonic() - 0.001)
    with pytest.raises(DeadlineExceeded):
        await core.embed(expired, MINILM, ["x"], None)


async def test_concurrent_first_requests_load_once(store: Path) -> None:
    registry = ModelRegistry(ModelStore(store), ThreadSettings())
    models = await asyncio.gather(*(registry.get(MINILM) for _ in range(8)))
    assert registry.load_count == 1
    assert all(m is models[0] for m in models)
    await registry.unload_all()


async def test_admission_sheds_beyond_the_inflight_limit(store: Path) -> None:
    registry = ModelRegistry(ModelStore(store), ThreadSettings())
    service = TaskService(registry, RequestLimits(max_inflight_per_model=2), ThreadSettings(model_workers=1))
    texts = ["a sentence of several words for the encoder"] * 64
    results = await asyncio.gather(
        *(service.embed(CTX, MINILM, texts, None) for _ in range(6)), return_exceptions=True
    )
    shed = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if not isinstance(r, BaseException)]
    assert len(served) == 2 and len(shed) == 4
    assert shed[0].retry_after_s
    assert (await service.embed(CTX, MINILM, ["after the burst"], None)).vectors
    await service.close()


async def test_admission_counts_overlapping_requests(store: Path) -> None:
    registry = ModelRegistry(ModelStore(store), ThreadSettings())
    service = TaskService(registry, RequestLimits(max_inflight_per_model=2), ThreadSettings())
    first = service._admitted(MINILM)
    second = service._admitted(MINILM)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first leaves while the second still runs
    assert service._inflight == {MINILM: 1}
    with service._admitted(MINILM), pytest.raises(Overloaded):  # 2 in flight: a third is shed
        service._admitted(MINILM).__enter__()
    second.__exit__(None, None, None)
    assert service._inflight == {}  # idle models leave no entry
    await service.close()
