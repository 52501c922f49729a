"""Schemathesis against the gateway's own /openapi.json, over a real socket.

Every operation a client can call gets schema-valid requests (positive) and requests that break
the schema (negative); model ids are drawn from the real ones as well as random strings, so the
requests reach the models. No answer may be a 5xx (nor a 5xx error event inside a stream), every
4xx must be the error table's body, and the server must still answer afterwards. (One exception:
the test store's model that fails at run time on purpose, ``FAILING_MODEL``, may answer the
table's INTERNAL 500, which is checked to be exactly that.)

The gateway is a dedicated one on a copy of the test store (tests/fuzz/conftest.py): deploys,
undeploys, unloads, pins and batching changes hit that copy, never the session's models. The
operations that take models away run last, so the others meet loaded models.

Each door's errors have its own body: KServe v2 (``/v2/...``) answers ``{"error": str}`` as KServe
does, every other door here Caikit's ``{details, code, id}``. (The OpenAI door, ``/v1/...``, is not
in /openapi.json; its errors are tested in tests/gateway/frontends/http/test_openai_errors.py.)
v2 requests are steered like Caikit's: ``model_name`` is a real model (or "no-such-model"),
``model_version`` "1" (other values come from the negative cases), and inference inputs the tensors
the models take.

Training: ``POST /api/v1/TextGenerationTaskPeftPromptTuningTrain`` names a base model that is not
there most of the time (``BASE_MODELS``), so few drawn requests create a job; one that does is
cancelled at once (``JobReaper``), the fuzz gateway takes one job at a time with one queued (more
are 429) and at most ``MAX_TRAIN_RECORDS`` records, and the last test checks that no job is left
running. ``training_id`` is the seeded finished job or an unknown one, adapter names the seeded
adapter (two versions of a MiniLM classifier, also among the model ids the task routes draw) or a
few others. Steering: tests/fuzz/openapi_steering.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import GatewayThread
from tests.fuzz.conftest import ADAPTER, FAILING_MODEL, INTERNAL_MESSAGE, JobReaper
from tests.fuzz.openapi_steering import TRAIN_ROUTE, bounded, steered

POSITIVE_EXAMPLES = 80
NEGATIVE_EXAMPLES = 60
MIN_CASES = 3000
# The table's server-side answers that are not failures: a model that cannot load (the fixture
# store has one whose source is missing) is UNAVAILABLE, a deadline that passed is 504.
RETRYABLE = (503, 504)

OPERATIONS = (
    "GET /health",
    "GET /metrics",
    "GET /info/version",
    "GET /info/models",
    "POST /api/v1/task/embedding",
    "POST /api/v1/task/embedding-tasks",
    "POST /api/v1/task/sentence-similarity",
    "POST /api/v1/task/sentence-similarity-tasks",
    "POST /api/v1/task/rerank",
    "POST /api/v1/task/rerank-tasks",
    "POST /api/v1/task/tokenization",
    "POST /api/v1/task/text-classification",
    "POST /api/v1/task/text-generation",
    "POST /api/v1/task/server-streaming-text-generation",
    "GET /management/models",
    "GET /management/models/{model_id}",
    "GET /management/models/{model_id}/batching",
    "PUT /management/models/{model_id}/batching",
    "PUT /management/models/{model_id}/pin",
    "POST /management/models/{model_id}/load",
    # KServe v2
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models",
    "GET /v2/models/{model_name}",
    "GET /v2/models/{model_name}/versions/{model_version}",
    "GET /v2/models/{model_name}/ready",
    "GET /v2/models/{model_name}/versions/{model_version}/ready",
    "POST /v2/models/{model_name}/infer",
    "POST /v2/models/{model_name}/versions/{model_version}/infer",
    "POST /v2/repository/models/{model_name}/load",
    # Caikit training, adapter management
    "POST /api/v1/TextGenerationTaskPeftPromptTuningTrain",
    "GET /management/trainings",
    "DELETE /management/trainings",
    "GET /management/adapters",
    "GET /management/adapters/{name}",
    "POST /management/adapters/{name}/rollback",
    # these take models away: last
    "POST /management/models/{model_id}/unload",
    "POST /v2/repository/models/{model_name}/unload",
    "POST /management/models",
    "DELETE /management/models",
)
# operation label -> why it may still fail (a bug handed to the owner of the module at fault)
KNOWN_FAILURES: dict[str, str] = {}
SENT: dict[str, int] = {}  # cases sent per operation, summed up by the last test


@pytest.fixture(scope="module")
def base_url(fuzz_gateway: GatewayThread) -> str:
    return fuzz_gateway.gateway.addresses.http


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        yield client


@pytest.fixture(scope="module")
def schema(base_url: str, session: requests.Session) -> schemathesis.BaseSchema:
    document = session.get(f"{base_url}/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(steered(document))


def test_every_operation_is_fuzzed(schema: schemathesis.BaseSchema) -> None:
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert labels == set(OPERATIONS)


def _names_failing_model(case: schemathesis.Case) -> bool:
    named = [*(case.path_parameters or {}).values(), *(case.query or {}).values()]
    if isinstance(case.body, dict):
        named.append(case.body.get("model_id"))
    return FAILING_MODEL in named


def _expected_internal(response: requests.Response, path: str) -> bool:
    """The table's INTERNAL answer: 500, the door's body, the request id in the message."""
    rid = response.headers.get("x-request-id", "")
    try:
        body = response.json()
    except ValueError:
        return False
    message = INTERNAL_MESSAGE + rid
    if path == "/v2" or path.startswith("/v2/"):
        return response.status_code == 500 and body == {"error": message}
    return response.status_code == 500 and body == {"details": message, "code": 500, "id": rid}


def _problem(response: requests.Response, path: str, failing_model: bool = False) -> str | None:
    status = response.status_code
    if status == 500 and failing_model and _expected_internal(response, path):
        return None  # FAILING_MODEL on a text longer than its position table: on purpose
    if status >= 500 and status not in RETRYABLE:
        return f"HTTP {status}: {response.text[:500]}"
    if "text/event-stream" in response.headers.get("content-type", ""):
        for line in response.text.splitlines():
            if line.startswith("data: "):
                code = json.loads(line[6:]).get("code")
                if isinstance(code, int) and code >= 500 and code not in RETRYABLE:
                    return f"HTTP {status}, stream error event {line[6:500]}"
        return None
    if status >= 400:
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {status} without a JSON body: {response.text[:200]!r}"
        if path == "/v2" or path.startswith("/v2/"):
            if not (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)):
                return f"HTTP {status} body is not KServe's {{error}}: {response.text[:300]}"
            if not body["error"]:
                return f"HTTP {status} with an empty error message"
        elif not isinstance(body, dict) or set(body) != {"details", "code", "id"} or body["code"] != status:
            return f"HTTP {status} body is not the error table's: {response.text[:300]}"
        elif not isinstance(body["details"], str) or not body["details"]:
            return f"HTTP {status} with no details: {response.text[:300]}"
    return None


def _describe(case: schemathesis.Case) -> str:
    """The request as sent (schemathesis's curl line masks anything named like a token)."""
    body = "" if case.body is None else json.dumps(case.body, default=repr)[:1000]
    return f"{case.method} {case.formatted_path} query={case.query!r} headers={case.headers!r} body={body}"


def _fuzz(
    schema: schemathesis.BaseSchema,
    label: str,
    base_url: str,
    session: requests.Session,
    reaper: JobReaper,
) -> tuple[int, list[str], bool]:
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label
    problems: list[str] = []
    sent = 0
    modes = [(GenerationMode.POSITIVE, POSITIVE_EXAMPLES)]
    takes_input = bool(operation.body) or any(True for _ in operation.iter_parameters())
    if takes_input:
        modes.append((GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES))
    for mode, examples in modes:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def send(case: schemathesis.Case) -> None:
            nonlocal sent
            bounded(case)
            response = session.request(**case.as_transport_kwargs(base_url=base_url), timeout=120)
            sent += 1
            if operation.path == TRAIN_ROUTE and response.status_code == 200:
                reaper.cancel(response.json()["training_id"])  # a job was made: it must not train on
            problem = _problem(response, operation.path, _names_failing_model(case))
            if problem is not None:
                problems.append(f"{problem}\n  request: {_describe(case)}")

        try:
            send()
        except Unsatisfiable:
            # nothing to break: a path parameter that is any string (an unknown id is a 404)
            assert mode is GenerationMode.NEGATIVE and not operation.body, label
    return sent, problems, takes_input


@pytest.mark.parametrize(
    "label",
    [
        pytest.param(label, marks=[pytest.mark.xfail(strict=False, reason=KNOWN_FAILURES[label])])
        if label in KNOWN_FAILURES
        else label
        for label in OPERATIONS
    ],
)
def test_operation_never_answers_5xx(
    schema: schemathesis.BaseSchema,
    label: str,
    base_url: str,
    session: requests.Session,
    job_reaper: JobReaper,
) -> None:
    sent, problems, takes_input = _fuzz(schema, label, base_url, session, job_reaper)
    SENT[label] = sent
    assert sent >= (POSITIVE_EXAMPLES // 2 if takes_input else 1), f"only {sent} cases were sent"
    assert not problems, f"{len(problems)} of {sent} cases failed:\n" + "\n".join(problems[:5])


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"])
def test_documentation_routes(base_url: str, session: requests.Session, path: str) -> None:
    assert session.get(base_url + path, timeout=30).status_code == 200


def test_still_serving_afterwards(base_url: str, session: requests.Session, job_reaper: JobReaper) -> None:
    if len(SENT) == len(OPERATIONS):  # the whole module ran
        assert sum(SENT.values()) >= MIN_CASES, SENT
    response = session.get(f"{base_url}/health", timeout=30)
    assert response.status_code == 200 and response.text == "OK"
    models = session.get(f"{base_url}/info/models", timeout=30)
    assert models.status_code == 200
    assert session.get(f"{base_url}/v2/health/live", timeout=30).json() == {"live": True}
    # the seeded adapter is still there, both versions, whatever rollbacks were drawn (its base
    # model may be gone: the last operations undeploy models)
    adapters = session.get(f"{base_url}/management/adapters", timeout=30).json()["adapters"]
    assert ADAPTER in {adapter["name"] for adapter in adapters}
    versions = session.get(f"{base_url}/management/adapters/{ADAPTER}", timeout=30).json()["versions"]
    assert [version["version"] for version in versions] == [1, 2]
    # every job a drawn request created was cancelled, and ends (none trains on)
    print(f"tuning jobs created by drawn requests (each cancelled at once): {len(job_reaper.created)}")
    assert job_reaper.wait_all_finished() == []
