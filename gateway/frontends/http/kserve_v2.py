"""KServe's Open Inference Protocol v2 over REST (``/v2/...``), over the protocol-neutral door in
``gateway.frontends.kserve_v2``: health, server and model metadata, readiness, inference, and the
model repository extension (load / unload in the registry; the store is left alone).

Inference bodies are JSON, or JSON followed by binary tensor data when the request carries the
``Inference-Header-Content-Length`` header (the length of the JSON part). Binary request data is
checked here before kserve's ``InferRequest.from_bytes`` reads it: sizes within the body and
accounting for every byte, BYTES elements (4-byte little-endian length, then the bytes) within
their segment and as many as the shape says, fixed-size types filling their shape exactly.
Outputs are binary when asked (an output's ``binary_data``, else the request's
``binary_data_output``): the body is then ``application/octet-stream`` with the same header.
Errors have KServe's body ``{"error": message}`` and the status of the one table.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from kserve.utils.numpy_codec import to_np_dtype
from pydantic import ValidationError

from gateway.errors import InvalidInput, TaskgateError, Unavailable
from gateway.frontends.http.common import Json, request_context, until_disconnect
from gateway.frontends.http.errors import safe_message
from gateway.frontends.kserve_v2 import KServeV2Service
from gateway.frontends.kserve_v2_tensors import checked_shape, kserve_errors, split_bytes_elements

PREFIX = "/v2"
INFERENCE_HEADER = "Inference-Header-Content-Length"
_LENGTH = re.compile(r"[0-9]{1,19}")
_SCALAR = (str, int, float, bool)


def v2_error_body(error: TaskgateError, request_id: str) -> Json:
    """KServe's REST error body (kserve.errors handlers): the message only."""
    return {"error": safe_message(error)}


def kserve_v2_router(v2: KServeV2Service) -> APIRouter:
    router = APIRouter(prefix=PREFIX)

    @router.get("")
    async def server_metadata() -> Json:
        return v2.server_metadata()

    @router.get("/health/live")
    async def server_live() -> Json:
        return {"live": True}

    @router.get("/health/ready")
    async def server_ready() -> Json:
        return {"ready": True}

    @router.get("/models")
    async def models() -> Json:
        return {"models": await v2.model_names()}

    @router.get("/models/{model_name}")
    @router.get("/models/{model_name}/versions/{model_version}")
    async def model_metadata(model_name: str, model_version: str | None = None) -> Json:
        return await v2.model_metadata(model_name, model_version)

    @router.get("/models/{model_name}/ready")
    @router.get("/models/{model_name}/versions/{model_version}/ready")
    async def model_ready(model_name: str, model_version: str | None = None) -> Json:
        """200 when loaded; KServe answers a model that is not ready with 503."""
        if not await v2.model_ready(model_name, model_version):
            raise Unavailable(
                f"model {model_name!r} is not loaded; it loads on its first inference request or on "
                f"POST {PREFIX}/repository/models/{model_name}/load"
            )
        return {"name": model_name, "ready": True}

    @router.post("/models/{model_name}/infer", openapi_extra=_infer_openapi())
    @router.post("/models/{model_name}/versions/{model_version}/infer", openapi_extra=_infer_openapi())
    async def infer(model_name: str, request: Request, model_version: str | None = None) -> Response:
        context = request_context(request)
        parsed = parse_infer_body(await request.body(), request.headers, model_name)
        response = await until_disconnect(request, v2.infer(context, parsed, model_version))
        with kserve_errors():
            content, json_length = response.to_rest()
        if json_length is None:
            return JSONResponse(content)
        headers = {INFERENCE_HEADER: str(json_length)}
        return Response(content, media_type="application/octet-stream", headers=headers)

    @router.post("/repository/models/{model_name}/load")
    async def load(model_name: str, request: Request) -> Json:
        await until_disconnect(request, v2.load(model_name))
        return {"name": model_name, "load": True}

    @router.post("/repository/models/{model_name}/unload")
    async def unload(model_name: str, request: Request) -> Json:
        await until_disconnect(request, v2.unload(model_name))
        return {"name": model_name, "unload": True}

    return router


def _infer_openapi() -> Json:
    """The request body in /openapi.json: kserve's JSON inference request, its definitions inlined
    (the binary form is that JSON followed by tensor data, which a JSON schema cannot say)."""
    schema = InferenceRequest.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            return inline(defs[ref.rsplit("/", 1)[-1]]) if ref else {k: inline(v) for k, v in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


def parse_infer_body(body: bytes, headers: Mapping[str, str], model_name: str) -> InferRequest:
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise InvalidInput(f"Content-Encoding {encoding[:40]!r} is not supported; send the body uncompressed")
    raw_length = headers.get(INFERENCE_HEADER)
    if raw_length is None:
        return _json_request(body, model_name)
    if not _LENGTH.fullmatch(raw_length.strip()):
        raise InvalidInput(f"{INFERENCE_HEADER} must be a whole number of bytes, got {raw_length[:40]!r}")
    json_length = int(raw_length)
    if not 0 < json_length <= len(body):
        raise InvalidInput(
            f"{INFERENCE_HEADER} is {json_length}, but the body has {len(body)} bytes; "
            "it must give the length of the JSON part at the start of the body"
        )
    return _binary_request(body, json_length, model_name)


def _json_request(body: bytes, model_name: str) -> InferRequest:
    try:
        request = InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg', 'invalid')}"
            for e in exc.errors()[:5]
        )
        raise InvalidInput(f"invalid inference request: {problems}") from None
    with kserve_errors():
        return InferRequest.from_inference_request(request, model_name)


def _binary_request(body: bytes, json_length: int, model_name: str) -> InferRequest:
    try:
        header = json.loads(body[:json_length])
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise InvalidInput(
            f"the first {json_length} bytes of the body ({INFERENCE_HEADER}) are not a JSON object"
        )
    _check_request_fields(header)
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("the inference request needs a non-empty 'inputs' list")
    offset = json_length
    for index, item in enumerate(inputs):
        offset = _check_input(item, index, body, offset)
    if offset != len(body):
        raise InvalidInput(
            f"{len(body) - offset} bytes follow the last input's binary data; "
            "the inputs' binary_data_size must account for every byte after the JSON part"
        )
    with kserve_errors():
        return InferRequest.from_bytes(body, json_length, model_name)


def _check_request_fields(header: dict[str, Any]) -> None:
    if not isinstance(header.get("id", ""), str):
        raise InvalidInput("the request 'id' must be a string")
    _check_parameters(header.get("parameters"), "the request")
    outputs = header.get("outputs")
    if outputs is None:
        return
    if not isinstance(outputs, list):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    for index, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidInput(f"outputs[{index}] must be an object with a string 'name'")
        _check_parameters(output.get("parameters"), f"output {output['name']!r}")


def _check_parameters(parameters: Any, owner: str) -> None:
    if parameters is None:
        return
    if not isinstance(parameters, dict) or not all(isinstance(v, _SCALAR) for v in parameters.values()):
        raise InvalidInput(f"the parameters of {owner} must be an object of strings, numbers and booleans")


def _check_input(item: Any, index: int, body: bytes, offset: int) -> int:
    """Check one input of a binary request; returns where the next input's binary data starts."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InvalidInput(f"inputs[{index}] must be an object with a string 'name'")
    name = item["name"]
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or to_np_dtype(datatype.upper()) is None:
        raise InvalidInput(f"input '{name}' has an unknown datatype {datatype!r}")
    shape = item.get("shape")
    if not isinstance(shape, list):
        raise InvalidInput(f"input '{name}' needs a 'shape' list")
    count = math.prod(checked_shape(shape, name))
    _check_parameters(item.get("parameters"), f"input '{name}'")
    size = (item.get("parameters") or {}).get("binary_data_size")
    if size is None:
        if not isinstance(item.get("data"), list):
            raise InvalidInput(f"input '{name}' needs a 'data' list or a binary_data_size parameter")
        return offset
    if "data" in item:
        raise InvalidInput(f"input '{name}' has both 'data' and binary data (binary_data_size)")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
    if size > len(body) - offset:
        raise InvalidInput(
            f"input '{name}': binary_data_size {size} runs past the end of the body "
            f"({len(body) - offset} bytes left)"
        )
    segment = body[offset : offset + size]
    if datatype.upper() == "BYTES":
        for number, element in enumerate(split_bytes_elements(segment, name, count)):
            try:
                element.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"input '{name}' element {number} is not valid UTF-8") from None
    else:
        itemsize = np.dtype(to_np_dtype(datatype.upper())).itemsize
        if size != count * itemsize:
            raise InvalidInput(
                f"input '{name}': {size} bytes of {datatype.upper()} data do not fill its shape "
                f"{shape} ({count} elements of {itemsize} bytes)"
            )
    return offset + size
