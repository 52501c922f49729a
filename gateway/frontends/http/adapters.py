"""REST management of tuned adapters, beside the model management routes (Caikit's error body):

- ``GET /management/adapters``: every adapter with its current version;
- ``GET /management/adapters/{name}``: its versions (base model, method, job id, metrics, sha256 of
  each file, created, extra) and which one is current;
- ``POST /management/adapters/{name}/rollback`` ``{"version": N}``: ``name`` serves version N from
  the next request on (``name@N`` always serves N).

Thin: parse, call ``TuningService``, convert. An unknown adapter or version is 404, a malformed
name or version 400.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from adapters.store import AdapterVersion
from gateway.errors import ModelNotFound
from gateway.frontends.http.common import Json
from gateway.tuning.service import TuningService


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=1, le=999_999_999, description="the version `name` serves from now on")


def version_info(version: AdapterVersion, current: int) -> Json:
    return {
        "version": version.version,
        "reference": version.reference,
        "current": version.version == current,
        "base_model": version.base_model,
        "method": version.method,
        "job_id": version.job_id,
        "metrics": version.metrics,
        "files": version.files,  # file name -> sha256
        "created": version.created,
        "extra": version.extra,
    }


def adapters_router(tuning: TuningService) -> APIRouter:
    router = APIRouter(prefix="/management/adapters", tags=["adapters"])

    async def describe(name: str) -> Json:
        versions = await tuning.adapter_versions(name)
        current = await tuning.current_version(name)
        return {
            "name": name,
            "current_version": current,
            "versions": [version_info(v, current) for v in versions],
        }

    @router.get("")
    async def list_adapters() -> Json:
        names = await tuning.adapter_names()
        currents = await asyncio.gather(*(_current_or_none(tuning, name) for name in names))
        return {
            "adapters": [
                {"name": name, "current_version": current}
                for name, current in zip(names, currents, strict=True)
                if current is not None  # a folder without a published version yet
            ]
        }

    @router.get("/{name}")
    async def get_adapter(name: str) -> Json:
        return await describe(name)

    @router.post("/{name}/rollback")
    async def rollback(name: str, body: RollbackRequest) -> Json:
        await tuning.rollback(name, body.version)
        return await describe(name)

    return router


async def _current_or_none(tuning: TuningService, name: str) -> int | None:
    try:
        return await tuning.current_version(name)
    except ModelNotFound:
        return None
