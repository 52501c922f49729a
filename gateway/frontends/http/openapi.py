"""The OpenAPI document in the shape Caikit clients read.

caikit-nlp-client builds its parameter list from ``/openapi.json``: it reads each task route's
request schema inline (no ``$ref``), its ``parameters`` as ``{"allOf": [{"properties": ...}]}``,
and a plain ``type`` on every parameter (Caikit's own document looks like that). FastAPI writes
``$ref`` and ``anyOf: [T, null]`` for optional fields; this rewrites the task routes' request
schemas into Caikit's shape, which is still valid OpenAPI 3.1.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

Json = dict[str, Any]
TASK_PREFIX = "/api/v1/task/"


def install_caikit_openapi(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> Json:
        if app.openapi_schema is None or not app.openapi_schema.get("x-caikit-shaped"):
            schema = copy.deepcopy(original())
            _reshape(schema)
            schema["x-caikit-shaped"] = True
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _reshape(schema: Json) -> None:
    components = schema.get("components", {}).get("schemas", {})
    for path, item in schema.get("paths", {}).items():
        if not path.startswith(TASK_PREFIX) or "post" not in item:
            continue
        content = item["post"].get("requestBody", {}).get("content", {}).get("application/json")
        if not content:
            continue
        request = _resolve(content["schema"], components)
        properties = {}
        for name, prop in request.get("properties", {}).items():
            properties[name] = (
                _parameter(prop, components) if name == "parameters" else _plain(prop, components)
            )
        content["schema"] = {**request, "properties": properties}


def _resolve(node: Json, components: Json) -> Json:
    if "$ref" in node:
        return copy.deepcopy(components[node["$ref"].rsplit("/", 1)[-1]])
    return node


def _parameter(node: Json, components: Json) -> Json:
    """An object as Caikit writes it: ``{"allOf": [{"properties": {...}}]}``."""
    target = _resolve(_non_null(node), components)
    fields = {name: _plain(prop, components) for name, prop in target.get("properties", {}).items()}
    inner: Json = {"type": "object", "properties": fields}
    for key in ("required", "additionalProperties"):  # what the server enforces, said
        if key in target:
            inner[key] = target[key]
    if target.get("description"):
        inner["description"] = target["description"]
    return {"allOf": [inner]}  # exactly one key: caikit-nlp-client asserts it


def _plain(node: Json, components: Json) -> Json:
    """A field with a plain ``type`` (the null alternative of an optional field dropped)."""
    extra = {k: v for k, v in node.items() if k in ("description", "default", "title")}
    inner = _resolve(_non_null(node), components)
    if inner.get("type") == "object" and "properties" in inner:
        return _parameter(inner, components)
    return {**inner, **extra}


def _non_null(node: Json) -> Json:
    options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        return options[0]
    return node
