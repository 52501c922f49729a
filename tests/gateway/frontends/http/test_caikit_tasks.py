"""End to end over a real HTTP socket with httpx and the real models (Caikit's JSON shapes)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.models import CLASSIFIER, MINILM


def _post(
    http: httpx.Client, task: str, inputs: object, parameters: dict | None = None, model: str = MINILM
) -> dict:
    body: dict[str, object] = {"model_id": model, "inputs": inputs}
    if parameters is not None:
        body["parameters"] = parameters
    response = http.post(f"/api/v1/task/{task}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_embedding(http: httpx.Client) -> None:
    result = _post(http, "embedding", "hello world")
    values = np.array(result["result"]["data"]["values"])
    assert values.shape == (384,) and abs(np.linalg.norm(values) - 1) < 1e-4
    assert result["input_token_count"] == 4
    assert set(result["producer_id"]) == {"name", "version"}


def test_embedding_tasks_and_truncation(http: httpx.Client) -> None:
    result = _post(http, "embedding-tasks", ["one", "two words"], {"truncate_input_tokens": 3})
    assert len(result["results"]["vectors"]) == 2
    assert result["input_token_count"] == 3 + 3


def test_rest_and_grpc_agree_with_the_core(http: httpx.Client) -> None:
    a = np.array(_post(http, "embedding", "same text")["result"]["data"]["values"])
    b = np.array(_post(http, "embedding-tasks", ["same text"])["results"]["vectors"][0]["data"]["values"])
    assert np.allclose(a, b, atol=1e-6)


def test_sentence_similarity(http: httpx.Client) -> None:
    inputs = {"source_sentence": "A cat sits.", "sentences": ["A kitten sits.", "Markets fell."]}
    scores = _post(http, "sentence-similarity", inputs)["result"]["scores"]
    assert scores[0] > scores[1]
    many = _post(http, "sentence-similarity-tasks", {"source_sentences": ["a", "b"], "sentences": ["c"]})
    assert [len(r["scores"]) for r in many["results"]] == [1, 1]


def test_rerank(http: httpx.Client) -> None:
    docs = [{"text": "Bananas are yellow."}, {"text": "Paris is the capital of France.", "id": 3}]
    result = _post(http, "rerank", {"query": "capital of France", "documents": docs}, {"top_n": 1})["result"]
    assert result["query"] == "capital of France"
    assert result["scores"][0]["index"] == 1 and result["scores"][0]["document"] == docs[1]
    assert result["scores"][0]["text"] == docs[1]["text"]
    bare = _post(
        http,
        "rerank",
        {"query": "q", "documents": docs},
        {"return_documents": False, "return_query": False, "return_text": False},
    )["result"]
    assert (
        bare["query"] is None and bare["scores"][0]["document"] is None and bare["scores"][0]["text"] is None
    )
    many = _post(http, "rerank-tasks", {"queries": ["fruit", "France"], "documents": docs})
    assert [r["scores"][0]["index"] for r in many["results"]] == [0, 1]


def test_tokenization(http: httpx.Client) -> None:
    result = _post(http, "tokenization", "Hello world")
    assert result == {
        "results": [{"start": 0, "end": 5, "text": "Hello"}, {"start": 6, "end": 11, "text": "world"}],
        "token_count": 2,
    }


def test_text_classification(http: httpx.Client) -> None:
    result = _post(http, "text-classification", "a wonderful day", model=CLASSIFIER)
    assert {r["label"] for r in result["results"]} == {"negative", "positive"}
    assert sum(r["score"] for r in result["results"]) == pytest.approx(1.0, abs=1e-5)


def test_health_and_info(http: httpx.Client) -> None:
    assert http.get("/health").text == "OK"
    version = http.get("/info/version").json()
    assert version["runtime_version"] and "fastapi" in version["python_packages"]
    models = {m["name"]: m for m in http.get("/info/models").json()["models"]}
    assert models[MINILM]["module_id"] == "onnx-encoder"
    assert "embedding" in models[MINILM]["metadata"]["tasks"]


def test_openapi_describes_routes_and_parameters(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    for task in (
        "embedding",
        "embedding-tasks",
        "sentence-similarity",
        "sentence-similarity-tasks",
        "rerank",
        "rerank-tasks",
        "tokenization",
        "text-classification",
    ):
        assert f"/api/v1/task/{task}" in spec["paths"], task
    rerank = spec["components"]["schemas"]["RerankParameters"]["properties"]
    assert {"top_n", "truncate_input_tokens", "return_documents", "return_query", "return_text"} <= set(
        rerank
    )


# -- hostile requests (found by tests/fuzz): answers from the error table, never a 5xx ----------


def _table_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"details", "code", "id"} and body["code"] == status
    return str(body["details"])


def test_unknown_routes_and_wrong_verbs_answer_the_table(http: httpx.Client) -> None:
    assert "/api/v1/task/nope" in _table_error(http.post("/api/v1/task/nope", json={}), 404)
    assert _table_error(http.get("/no/such/thing"), 404)
    wrong = http.get("/api/v1/task/embedding")
    assert "GET" in _table_error(wrong, 405)
    assert wrong.headers["allow"] == "POST"
    assert _table_error(http.delete("/health"), 405)


@pytest.mark.parametrize(
    ("task", "body"),
    [
        ("embedding", '{"model_id": "MODEL", "inputs": "a\\ud800b"}'),
        ("tokenization", '{"model_id": "MODEL", "inputs": "\\udfff"}'),
        (
            "rerank",
            '{"model_id": "MODEL", "inputs": {"query": "q", "documents": [{"text": "t", "\\ud83d": 1}]}}',
        ),
        (
            "text-generation",
            '{"model_id": "MODEL", "inputs": "x", "parameters": {"stop_sequences": ["\\udc00"]}}',
        ),
    ],
)
def test_lone_surrogates_are_invalid_input(http: httpx.Client, task: str, body: str) -> None:
    """JSON can escape half a UTF-16 pair; that is no text: it was a 500 (tokenizers, the JSON
    answer and file names cannot encode it)."""
    response = http.post(
        f"/api/v1/task/{task}",
        content=body.replace("MODEL", MINILM),
        headers={"content-type": "application/json"},
    )
    assert "surrogate" in _table_error(response, 400)
    paired = '{"model_id": "MODEL", "inputs": "\\ud83d\\ude00"}'.replace("MODEL", MINILM)  # a pair is fine
    ok = http.post("/api/v1/task/tokenization", content=paired, headers={"content-type": "application/json"})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("timeout", ["nan", "inf", "-inf", "1e999"])
def test_timeout_header_must_be_finite(http: httpx.Client, timeout: str) -> None:
    """A NaN deadline compared false everywhere: it came back as 503 'still loading'."""
    response = http.post(
        "/api/v1/task/tokenization",
        json={"model_id": MINILM, "inputs": "x"},
        headers={"x-request-timeout-ms": timeout},
    )
    assert "x-request-timeout-ms" in _table_error(response, 400)


def test_json_nested_too_deep_is_invalid_input(http: httpx.Client) -> None:
    deep = '{"model_id": "' + MINILM + '", "inputs": ' + "[" * 20000 + "]" * 20000 + "}"
    response = http.post("/api/v1/task/embedding", content=deep, headers={"content-type": "application/json"})
    assert "parsing the body" in _table_error(response, 400)


def test_openapi_says_what_the_server_enforces(http: httpx.Client) -> None:
    """Unknown parameters and missing inputs are refused: the schema says so (schemathesis's valid
    requests were all refused before)."""
    spec = http.get("/openapi.json").json()
    request = spec["paths"]["/api/v1/task/rerank"]["post"]["requestBody"]["content"]["application/json"]
    properties = request["schema"]["properties"]
    (parameters,) = properties["parameters"]["allOf"]
    assert parameters["additionalProperties"] is False
    (inputs,) = properties["inputs"]["allOf"]
    assert inputs["required"] == ["query", "documents"] and inputs["additionalProperties"] is False
    assert inputs["properties"]["documents"]["items"]["required"] == ["text"]
