"""gRPC management frontends: Caikit's ModelManagement, our ModelControl, ModelMesh's
mmesh.ModelRuntime SPI. Thin: convert, call gateway.models.management, convert back."""

from __future__ import annotations

import os
from typing import Any

from gateway import __version__
from gateway.core import RequestContext, TaskService
from gateway.frontends.grpc.common import rpc
from gateway.models.info import model_info
from gateway.models.management import ModelFile, ModelManagement
from gateway.models.registry import ModelStatus
from gateway.wire import caikit_data_model_common_runtime_pb2 as info_pb2
from gateway.wire import caikit_data_model_runtime_models_pb2 as caikit_models_pb2
from gateway.wire import caikit_runtime_models_pb2_grpc as caikit_models_grpc
from gateway.wire import modelmesh_model_runtime_pb2 as mmesh_pb2
from gateway.wire import modelmesh_model_runtime_pb2_grpc as mmesh_grpc
from gateway.wire import taskgate_management_pb2 as control_pb2
from gateway.wire import taskgate_management_pb2_grpc as control_grpc

MODEL_LOADING_TIMEOUT_MS = 120_000
DEFAULT_MODEL_SIZE = 100 * 1024 * 1024


def status_message(status: ModelStatus) -> control_pb2.ModelStatus:
    return control_pb2.ModelStatus(
        model_id=status.model_id,
        state=control_pb2.ModelState.Value(status.state),
        tasks=list(status.tasks),
        runtime=status.runtime,
        source=status.source,
        size_bytes=status.size_bytes,
        estimated_size_bytes=status.estimated_size_bytes,
        pinned=status.pinned,
        hits=status.hits,
        misses=status.misses,
        last_used_unix_s=status.last_used,
        load_seconds=status.load_seconds,
        failure_reason=status.reason,
        inflight=status.inflight,
    )


class CaikitModelManagementServicer(caikit_models_grpc.ModelManagementServicer):
    def __init__(self, management: ModelManagement) -> None:
        self._management = management

    @rpc
    async def DeployModel(self, request: Any, ctx: RequestContext) -> info_pb2.ModelInfo:
        files = [ModelFile(f.filename, f.data) for f in request.model_files]
        status = await self._management.deploy(request.model_id, files)
        return info_pb2.ModelInfo(**model_info(status))

    @rpc
    async def UndeployModel(self, request: Any, ctx: RequestContext) -> Any:
        await self._management.undeploy(request.model_id)
        return caikit_models_pb2.UndeployModelRequest(model_id=request.model_id)


class ModelControlServicer(control_grpc.ModelControlServicer):
    def __init__(self, management: ModelManagement, core: TaskService) -> None:
        self._management = management
        self._core = core

    @rpc
    async def ListModels(self, request: Any, ctx: RequestContext) -> control_pb2.ListModelsResponse:
        statuses = await self._management.list()
        return control_pb2.ListModelsResponse(models=[status_message(s) for s in statuses])

    @rpc
    async def GetModel(self, request: Any, ctx: RequestContext) -> control_pb2.ModelStatus:
        return status_message(await self._management.status(request.model_id))

    @rpc
    async def LoadModel(self, request: Any, ctx: RequestContext) -> control_pb2.ModelStatus:
        return status_message(await self._management.load(request.model_id))

    @rpc
    async def UnloadModel(self, request: Any, ctx: RequestContext) -> control_pb2.ModelStatus:
        return status_message(await self._management.unload(request.model_id))

    @rpc
    async def PinModel(self, request: Any, ctx: RequestContext) -> control_pb2.ModelStatus:
        return status_message(await self._management.pin(request.model_id, request.pinned))

    @rpc
    async def GetBatching(self, request: Any, ctx: RequestContext) -> control_pb2.BatchingSettings:
        return control_pb2.BatchingSettings(**(await self._core.batching(request.model_id)).as_dict())

    @rpc
    async def UpdateBatching(self, request: Any, ctx: RequestContext) -> control_pb2.BatchingSettings:
        fields = ("max_batch_size", "max_queue_delay_ms", "max_queue_rows")
        values = {name: getattr(request, name) for name in fields if request.HasField(name)}
        settings = await self._core.set_batching(request.model_id, values, persist=request.persist)
        return control_pb2.BatchingSettings(**settings.as_dict(), persisted=request.persist)


class ModelMeshRuntimeServicer(mmesh_grpc.ModelRuntimeServicer):
    """ModelMesh's model-runtime SPI: it pulls model files to modelPath, then asks us to load."""

    def __init__(self, management: ModelManagement, capacity_bytes: int, max_loads: int) -> None:
        self._management = management
        self._capacity = capacity_bytes or _half_of_memory()
        self._max_loads = max_loads

    @rpc
    async def runtimeStatus(self, request: Any, ctx: RequestContext) -> mmesh_pb2.RuntimeStatusResponse:
        return mmesh_pb2.RuntimeStatusResponse(
            status=mmesh_pb2.RuntimeStatusResponse.READY,
            capacityInBytes=self._capacity,
            maxLoadingConcurrency=self._max_loads,
            modelLoadingTimeoutMs=MODEL_LOADING_TIMEOUT_MS,
            defaultModelSizeInBytes=DEFAULT_MODEL_SIZE,
            runtimeVersion=__version__,
            limitModelConcurrency=False,
            allowAnyMethod=True,
        )

    @rpc
    async def loadModel(self, request: Any, ctx: RequestContext) -> mmesh_pb2.LoadModelResponse:
        await self._management.register_path(request.modelId, request.modelType, request.modelPath)
        status = await self._management.load(request.modelId)
        return mmesh_pb2.LoadModelResponse(sizeInBytes=status.size_bytes, maxConcurrency=0)

    @rpc
    async def unloadModel(self, request: Any, ctx: RequestContext) -> mmesh_pb2.UnloadModelResponse:
        await self._management.unregister(request.modelId)
        return mmesh_pb2.UnloadModelResponse()

    @rpc
    async def predictModelSize(self, request: Any, ctx: RequestContext) -> mmesh_pb2.PredictModelSizeResponse:
        size = await self._management.predict_size(request.modelPath)
        return mmesh_pb2.PredictModelSizeResponse(sizeInBytes=size)

    @rpc
    async def modelSize(self, request: Any, ctx: RequestContext) -> mmesh_pb2.ModelSizeResponse:
        status = await self._management.status(request.modelId)
        return mmesh_pb2.ModelSizeResponse(sizeInBytes=status.size_bytes)


def _half_of_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
