"""REST management routes: Caikit's deploy / undeploy, our list / status / load / unload /
pin / batching. Thin: parse, call gateway.management or the core, convert."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any

from fastapi import APIRouter

from gateway import http_schemas as schemas
from gateway.core import TaskService
from gateway.errors import InvalidInput
from gateway.info import model_info
from gateway.management import ModelFile, ModelManagement
from gateway.registry import ModelStatus

Json = dict[str, Any]


def _status(status: ModelStatus) -> Json:
    return dataclasses.asdict(status)


def management_router(management: ModelManagement, core: TaskService) -> APIRouter:
    router = APIRouter(prefix="/management", tags=["management"])

    @router.post("/models")
    async def deploy(body: schemas.DeployRequest) -> Json:
        files = []
        for file in body.model_files:
            try:
                files.append(ModelFile(file.filename, base64.b64decode(file.data, validate=True)))
            except (binascii.Error, ValueError):
                raise InvalidInput(f"model file {file.filename!r}: data is not valid base64") from None
        return model_info(await management.deploy(body.model_id, files))

    @router.delete("/models")
    async def undeploy(model_id: str) -> Json:
        await management.undeploy(model_id)
        return {"model_id": model_id}

    @router.get("/models")
    async def list_models() -> Json:
        return {"models": [_status(s) for s in management.list()]}

    @router.get("/models/{model_id}")
    async def get_model(model_id: str) -> Json:
        return _status(management.status(model_id))

    @router.post("/models/{model_id}/load")
    async def load(model_id: str) -> Json:
        return _status(await management.load(model_id))

    @router.post("/models/{model_id}/unload")
    async def unload(model_id: str) -> Json:
        return _status(await management.unload(model_id))

    @router.put("/models/{model_id}/pin")
    async def pin(model_id: str, body: schemas.PinUpdate) -> Json:
        return _status(management.pin(model_id, body.pinned))

    @router.get("/models/{model_id}/batching")
    async def get_batching(model_id: str) -> Json:
        return (await core.batching(model_id)).as_dict()

    @router.put("/models/{model_id}/batching")
    async def put_batching(model_id: str, body: schemas.BatchingUpdate) -> Json:
        return (await core.set_batching(model_id, body.model_dump(exclude_none=True))).as_dict()

    return router
