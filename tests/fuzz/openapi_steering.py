"""How the schemathesis fuzzer's requests are steered (tests/fuzz/test_http_openapi_fuzz.py).

``steered`` rewrites the /openapi.json document the positive cases are drawn from so that they
reach the models and the tuning checks (real model ids, v2 tensors the models take, the seeded
job, adapter names, tuning base models that are mostly not there); the negative cases break the
rewritten schema, so they still send every other value. ``bounded`` then bounds each drawn
request's generation work.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from tests.fuzz.conftest import (
    ADAPTER_NAMES,
    BASE_MODELS,
    DATASET,
    GENERATION_MODEL,
    MODEL_IDS,
    SEEDED_JOB,
    UNKNOWN_JOB,
)

# Generation runs SmolLM2 on CPU (~25 tokens/s here): one request may ask for up to the server's
# token limit, minutes of work. So drawn requests that would generate more new tokens than this
# (a larger integer, or none: the default is 20) are sent with this many, to keep the module
# within CI's time; values that are refused (negative, not an integer) are sent as drawn, and
# the parameter's whole range is tested in tests/gateway/generation/test_params.py.
MAX_NEW_TOKENS = 4
GENERATION_ROUTES = ("/api/v1/task/text-generation", "/api/v1/task/server-streaming-text-generation")
V2_INFER_ROUTES = ("/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer")
TRAIN_ROUTE = "/api/v1/TextGenerationTaskPeftPromptTuningTrain"


def _one_of(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


# parameters (path or query) by name -> the schema positive cases draw from
_PARAMETERS = {
    "model_id": _one_of(*MODEL_IDS, "no-such-model"),
    "model_name": _one_of(*MODEL_IDS, "no-such-model"),  # KServe v2's name for a model
    "model_version": _one_of("1"),  # the version every model serves
    "training_id": _one_of(SEEDED_JOB, UNKNOWN_JOB),
    "name": _one_of(*ADAPTER_NAMES),  # /management/adapters/{name}
}
# properties of KServe's inference request objects, by the object's title
_PROPERTIES_BY_TITLE = {
    "RequestInput": {
        "name": _one_of("text", "text_input"),
        "datatype": _one_of("BYTES"),  # other datatypes come from the negative cases
        "shape": {"type": "array", "items": {"type": "integer", "minimum": -1, "maximum": 4}, "maxItems": 2},
        "data": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
    },
    "RequestOutput": {"name": _one_of("embedding", "label", "score", "text_output", "output-0")},
}


def steered(document: dict[str, Any]) -> dict[str, Any]:
    """Valid requests steered toward the models: every ``model_id`` / ``model_name`` (body field,
    path or query parameter) is a real one and strings are not empty; invalid ids (any other
    string, or no string) and empty strings come from the negative cases. (Hypothesis would merge
    ``anyOf: [enum, string]`` into plain strings, which almost never name a model.) The same for
    v2 inputs, training ids, adapter names and the train body (the tables above, ``_steer_train``);
    every steer must find its place, so a renamed field cannot silently end the steering."""
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" not in node:
                node.setdefault("minLength", 1)  # the server refuses empty texts: steer past that
            properties = node.get("properties")
            if isinstance(properties, dict):
                if "model_id" in properties:
                    properties["model_id"] = dict(_PARAMETERS["model_id"])
                for name, schema in _PROPERTIES_BY_TITLE.get(node.get("title", ""), {}).items():
                    properties[name] = dict(schema)
                    used.add(f"{node['title']}.{name}")
            name = node.get("name")
            if isinstance(name, str) and name in _PARAMETERS and node.get("in") in ("path", "query"):
                node["schema"] = dict(_PARAMETERS[name])
                used.add(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    _steer_train(
        document["paths"][TRAIN_ROUTE]["post"]["requestBody"]["content"]["application/json"]["schema"]
    )
    expected = set(_PARAMETERS) | {f"{t}.{n}" for t, names in _PROPERTIES_BY_TITLE.items() for n in names}
    assert used == expected, f"not steered: {sorted(expected - used)}"
    return document


def _steer_train(body: dict[str, Any]) -> None:
    """The train body: ``model_name`` is the adapter the job makes, ``base_model`` mostly one that
    is not there (few drawn requests make a job), a data file the seeded dataset or a path out.
    The body is read into a protobuf message, which has no other fields and one data source per
    stream (a oneof), as the published schema does not say: without these, nearly every drawn
    body is refused at parsing (400) and none reaches the tuning checks."""

    def closed(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
            for value in node.values():
                closed(value)

    closed(body)
    body["properties"]["model_name"] = _one_of(*ADAPTER_NAMES)
    parameters = body["properties"]["parameters"]["properties"]
    parameters["base_model"] = _one_of(*BASE_MODELS)
    for stream in ("train_stream", "val_stream"):
        parameters[stream].update(minProperties=1, maxProperties=1)
        file = parameters[stream]["properties"]["file"]
        file["properties"]["filename"] = _one_of(DATASET, "../" + DATASET, "missing.jsonl")


def bounded(case: schemathesis.Case) -> None:
    if case.operation.path in V2_INFER_ROUTES:
        _bounded_v2(case)
    if case.operation.path not in GENERATION_ROUTES or not isinstance(case.body, dict):
        return
    if "parameters" not in case.body:
        case.body["parameters"] = {"max_new_tokens": MAX_NEW_TOKENS}
    parameters = case.body["parameters"]
    if isinstance(parameters, dict):
        tokens = parameters.get("max_new_tokens")
        if tokens is None or (type(tokens) is int and tokens > MAX_NEW_TOKENS):
            parameters["max_new_tokens"] = MAX_NEW_TOKENS


def _bounded_v2(case: schemathesis.Case) -> None:
    """v2 inference: generation bounded as above (``max_new_tokens``, or Triton's ``max_tokens``,
    as a request parameter); an input named as the models name theirs gets the shape of its data
    (other shapes come with other names and from the negative cases)."""
    if not isinstance(case.body, dict):
        return
    inputs = case.body.get("inputs")
    for tensor in inputs if isinstance(inputs, list) else ():  # a negative case may draw any JSON
        if isinstance(tensor, dict) and tensor.get("name") in ("text", "text_input"):
            data, shape = tensor.get("data"), tensor.get("shape")
            if (
                isinstance(data, list)
                and isinstance(shape, list)
                and all(type(d) is int and d >= 0 for d in shape)
            ):
                tensor["shape"] = [len(data)]
    if (case.path_parameters or {}).get("model_name") != GENERATION_MODEL:
        return
    parameters = case.body.get("parameters")
    if parameters is None:
        parameters = case.body["parameters"] = {}
    if not isinstance(parameters, dict):
        return
    drawn = [name for name in ("max_new_tokens", "max_tokens") if name in parameters]
    if not drawn:
        parameters["max_new_tokens"] = MAX_NEW_TOKENS
    for name in drawn:
        tokens = parameters[name]
        if type(tokens) is int and tokens > MAX_NEW_TOKENS:
            parameters[name] = MAX_NEW_TOKENS
