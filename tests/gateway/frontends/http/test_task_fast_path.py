"""The lean path of the encoder task routes (gateway/frontends/http/task_fast_path.py), over a
real socket with the real models: the same answers, the same errors and the same OpenAPI document
as FastAPI's routes.

A body sent as ``application/json`` takes the lean path; the same body sent as
``application/vnd.taskgate+json`` (a JSON type FastAPI reads, the lean path does not take) goes
through FastAPI's route, so each pair below compares the two paths on one server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from gateway.frontends.http.caikit_tasks import caikit_task_router
from gateway.frontends.http.task_fast_path import ROUTES, _finite, _json_content
from tests.conftest import GatewayThread
from tests.models import CLASSIFIER, MINILM

SNAPSHOT = Path(__file__).with_name("caikit_task_openapi.json")
FAST = {"content-type": "application/json", "x-request-id": "fast-path-test"}
FASTAPI = {"content-type": "application/vnd.taskgate+json", "x-request-id": "fast-path-test"}
DOCS = [{"text": "Bananas are yellow."}, {"text": "Paris is the capital of France.", "id": 3}]
REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("embedding", {"model_id": MINILM, "inputs": "hello world"}),
    (
        "embedding-tasks",
        {"model_id": MINILM, "inputs": ["one", "two words"], "parameters": {"truncate_input_tokens": 3}},
    ),
    (
        "sentence-similarity",
        {"model_id": MINILM, "inputs": {"source_sentence": "A cat.", "sentences": ["A kitten.", "Markets."]}},
    ),
    (
        "sentence-similarity-tasks",
        {"model_id": MINILM, "inputs": {"source_sentences": ["a", "b"], "sentences": ["c"]}},
    ),
    (
        "rerank",
        {"model_id": MINILM, "inputs": {"query": "France", "documents": DOCS}, "parameters": {"top_n": 1}},
    ),
    (
        "rerank",
        {
            "model_id": MINILM,
            "inputs": {"query": "q", "documents": DOCS},
            "parameters": {"return_text": False},
        },
    ),
    ("rerank-tasks", {"model_id": MINILM, "inputs": {"queries": ["fruit", "France"], "documents": DOCS}}),
    ("tokenization", {"model_id": MINILM, "inputs": "Hello world"}),
    ("text-classification", {"model_id": CLASSIFIER, "inputs": "a wonderful day"}),
    # past 64 bits: orjson refuses it, so FastAPI's route answers (truncating to the model's limit)
    (
        "embedding-tasks",
        {"model_id": MINILM, "inputs": ["a"], "parameters": {"truncate_input_tokens": 10**30}},
    ),
]
BAD_BODIES: list[tuple[str, bytes]] = [
    ("embedding", b'{"model_id": "' + MINILM.encode() + b'"}'),  # inputs missing
    ("embedding", b'{"model_id": "' + MINILM.encode() + b'", "inputs": "x", "extra": 1}'),  # unknown key
    ("embedding", b'{"model_id": "' + MINILM.encode() + b'", "inputs": 7}'),  # wrong type
    ("embedding", b'{"model_id": "' + MINILM.encode() + b'", "inputs": "\\ud800"}'),  # lone surrogate
    ("embedding", b'{"model_id": "' + MINILM.encode() + b'", "inputs": "x", "parameters": NaN}'),
    ("embedding", b'{"model_id": "' + MINILM.encode() + b'", "inputs": 123456789012345678901234567890}'),
    ("embedding", b"\xef\xbb\xbf{}"),  # a byte-order mark
    ("embedding", b"not json"),
    ("embedding", b""),
    ("embedding", b"[1, 2]"),
    ("rerank", b'{"model_id": "' + MINILM.encode() + b'", "inputs": {"query": "q", "documents": [{}]}}'),
    ("sentence-similarity", b'{"model_id": "' + MINILM.encode() + b'", "inputs": {"sentences": []}}'),
]
CORE_ERRORS: list[tuple[str, dict[str, Any], int]] = [
    ("embedding", {"model_id": "no-such-model", "inputs": "x"}, 404),
    ("embedding", {"model_id": MINILM, "inputs": ""}, 400),
    ("embedding-tasks", {"model_id": MINILM, "inputs": ["x"] * 65}, 413),
    ("text-classification", {"model_id": MINILM, "inputs": "x"}, 400),  # an embedder cannot classify
    (
        "rerank",
        {"model_id": MINILM, "inputs": {"query": "q", "documents": DOCS}, "parameters": {"top_n": -1}},
        400,
    ),
]


def _both(http: httpx.Client, task: str, content: bytes) -> tuple[httpx.Response, httpx.Response]:
    url = f"/api/v1/task/{task}"
    return http.post(url, content=content, headers=FAST), http.post(url, content=content, headers=FASTAPI)


@pytest.mark.parametrize(("task", "body"), REQUESTS)
def test_answers_equal_fastapis(http: httpx.Client, task: str, body: dict[str, Any]) -> None:
    fast, slow = _both(http, task, json.dumps(body).encode())
    assert fast.status_code == slow.status_code == 200, (fast.text, slow.text)
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    assert fast.json() == slow.json()  # one server, one model, one row each: equal to the bit


@pytest.mark.parametrize(("task", "content"), BAD_BODIES)
def test_refused_bodies_answer_as_fastapi(http: httpx.Client, task: str, content: bytes) -> None:
    fast, slow = _both(http, task, content)
    assert fast.status_code == slow.status_code == 400, (fast.text, slow.text)
    assert fast.json() == slow.json()
    assert set(fast.json()) == {"details", "code", "id"} and fast.json()["id"] == "fast-path-test"


@pytest.mark.parametrize(("task", "body", "status"), CORE_ERRORS)
def test_core_errors_answer_as_fastapi(
    http: httpx.Client, task: str, body: dict[str, Any], status: int
) -> None:
    fast, slow = _both(http, task, json.dumps(body).encode())
    assert fast.status_code == slow.status_code == status, (fast.text, slow.text)
    assert fast.json() == slow.json()
    assert fast.headers["x-request-id"] == slow.headers["x-request-id"] == "fast-path-test"


def test_body_over_the_limit_is_413_on_the_lean_path(http: httpx.Client) -> None:
    from tests.conftest import MAX_REQUEST_BYTES

    text = "a" * (MAX_REQUEST_BYTES + 10)
    content = json.dumps({"model_id": MINILM, "inputs": text}).encode()
    fast, slow = _both(http, "embedding", content)
    assert fast.status_code == slow.status_code == 413
    assert fast.json()["details"] == slow.json()["details"]


def test_routes_table_matches_the_fastapi_routes(gateway: GatewayThread) -> None:
    """Every lean route is a FastAPI POST route with the same request model (so the OpenAPI
    document, made from the FastAPI routes, describes what the lean path accepts)."""
    router = caikit_task_router(gateway.gateway.core)
    routes = {r.path: r for r in router.routes if isinstance(r, APIRoute) and "POST" in r.methods}
    for path, (model, _) in ROUTES.items():
        assert routes[path].body_field is not None
        assert routes[path].body_field.field_info.annotation is model, path


def test_openapi_of_the_task_routes_is_unchanged(http: httpx.Client) -> None:
    """The Caikit task routes' part of /openapi.json (their paths and every schema they reach)
    equals the document as it was before the lean path (checked in beside this test)."""
    document = http.get("/openapi.json").json()
    assert _task_part(document) == json.loads(SNAPSHOT.read_text())


def test_content_types_the_lean_path_takes() -> None:
    def scope(*values: bytes) -> dict[str, Any]:
        return {"headers": [(b"content-type", v) for v in values]}

    assert _json_content(scope(b"application/json"))
    assert _json_content(scope(b"Application/JSON; charset=utf-8"))
    assert not _json_content(scope(b"application/vnd.taskgate+json"))
    assert not _json_content(scope(b"text/plain"))
    assert not _json_content(scope())


def test_non_finite_results_are_found() -> None:
    assert _finite({"a": [1.0, {"b": (2.0, None, "x")}]})
    assert not _finite({"a": [1.0, {"b": [float("nan")]}]})
    assert not _finite([float("inf")])


def _task_part(document: dict[str, Any]) -> dict[str, Any]:
    paths = {p: v for p, v in document["paths"].items() if p.startswith("/api/v1/task/")}
    schemas = document["components"]["schemas"]
    wanted: set[str] = set()
    todo = [paths]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in wanted:
                    wanted.add(name)
                    todo.append(schemas[name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return {"paths": paths, "schemas": {name: schemas[name] for name in sorted(wanted)}}
