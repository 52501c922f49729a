"""REST management routes: Caikit's deploy / undeploy, our list / status / load / unload /
pin / batching. Thin: parse, call gateway.models.management or the core, convert."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from gateway.core import TaskService
from gateway.errors import InvalidInput
from gateway.frontends.http import schemas
from gateway.models.info import model_info
from gateway.models.management import ModelFile, ModelManagement
from gateway.models.registry import ModelStatus

Json = dict[str, Any]


def _status(status: ModelStatus) -> Json:
    return dataclasses.asdict(status)


def _inlined(schema: Json) -> Json:
    """A JSON schema with its local ``$defs`` references replaced by the definitions."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    result: Json = walk(schema)
    return result


def _parse_deploy(raw: bytes) -> tuple[str, list[ModelFile]]:
    try:
        body = schemas.DeployRequest.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid request: {problems}") from None
    files = []
    for file in body.model_files:
        try:
            files.append(ModelFile(file.filename, base64.b64decode(file.data, validate=True)))
        except (binascii.Error, ValueError):
            raise InvalidInput(f"model file {file.filename!r}: data is not valid base64") from None
    return body.model_id, files


def management_router(management: ModelManagement, core: TaskService) -> APIRouter:
    router = APIRouter(prefix="/management", tags=["management"])

    @router.post(
        "/models",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _inlined(schemas.DeployRequest.model_json_schema())}
                },
            }
        },
    )
    async def deploy(request: Request) -> Json:
        """The body (model files, base64, up to --max-deploy-bytes) is parsed and decoded in a
        thread: on the event loop it would stall every other request for tens of milliseconds."""
        model_id, files = await asyncio.to_thread(_parse_deploy, await request.body())
        return model_info(await management.deploy(model_id, files))

    @router.delete("/models")
    async def undeploy(model_id: str) -> Json:
        await management.undeploy(model_id)
        return {"model_id": model_id}

    @router.get("/models")
    async def list_models() -> Json:
        return {"models": [_status(s) for s in await management.list()]}

    @router.get("/models/{model_id}")
    async def get_model(model_id: str) -> Json:
        return _status(await management.status(model_id))

    @router.post("/models/{model_id}/load")
    async def load(model_id: str) -> Json:
        return _status(await management.load(model_id))

    @router.post("/models/{model_id}/unload")
    async def unload(model_id: str) -> Json:
        return _status(await management.unload(model_id))

    @router.put("/models/{model_id}/pin")
    async def pin(model_id: str, body: schemas.PinUpdate) -> Json:
        return _status(await management.pin(model_id, body.pinned))

    @router.get("/models/{model_id}/batching")
    async def get_batching(model_id: str) -> Json:
        return (await core.batching(model_id)).as_dict()

    @router.put("/models/{model_id}/batching")
    async def put_batching(model_id: str, body: schemas.BatchingUpdate) -> Json:
        values = body.model_dump(exclude_none=True, exclude={"persist"})
        settings = await core.set_batching(model_id, values, persist=body.persist)
        return {**settings.as_dict(), "persisted": body.persist}

    return router
