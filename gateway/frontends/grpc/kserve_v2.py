"""KServe's Open Inference Protocol v2 over gRPC: ``inference.GRPCInferenceService`` from kserve's
generated modules, over the protocol-neutral door in ``gateway.frontends.kserve_v2``.

Tensor data comes in ``contents`` or in ``raw_input_contents`` (one entry per input, as KServe's
and Triton's clients send BYTES); raw BYTES data is checked (length prefixes within the entry,
as many elements as the shape says) before it is read. Outputs are raw exactly when the inputs
were (kserve's rule). A model that is not loaded answers ModelReady with ``ready: false``; an
unknown one is NOT_FOUND. Errors and deadlines go through ``rpc`` (the one table).
"""

from __future__ import annotations

import math
from typing import Any

import grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from kserve.protocol.infer_type import InferRequest
from kserve.utils.numpy_codec import to_np_dtype

from gateway.core import RequestContext
from gateway.errors import InvalidInput
from gateway.frontends.grpc.common import rpc
from gateway.frontends.kserve_v2 import KServeV2Service
from gateway.frontends.kserve_v2_tensors import checked_shape, kserve_errors, split_bytes_elements

# "inference.GRPCInferenceService"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def add_kserve_v2_servicer(v2: KServeV2Service, server: grpc.aio.Server) -> None:
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(KServeV2Servicer(v2), server)


class KServeV2Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, v2: KServeV2Service) -> None:
        self._v2 = v2

    @rpc
    async def ServerLive(self, request: Any, ctx: RequestContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(self, request: Any, ctx: RequestContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    @rpc
    async def ModelReady(self, request: Any, ctx: RequestContext) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=await self._v2.model_ready(request.name, request.version))

    @rpc
    async def ServerMetadata(self, request: Any, ctx: RequestContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self._v2.server_metadata())

    @rpc
    async def ModelMetadata(self, request: Any, ctx: RequestContext) -> pb.ModelMetadataResponse:
        return pb.ModelMetadataResponse(**await self._v2.model_metadata(request.name, request.version))

    @rpc
    async def ModelInfer(self, request: Any, ctx: RequestContext) -> pb.ModelInferResponse:
        _read_tensors(request)
        with kserve_errors():
            parsed = InferRequest.from_grpc(request)
        response = await self._v2.infer(ctx, parsed, request.model_version)
        with kserve_errors():
            return response.to_grpc()

    @rpc
    async def RepositoryModelLoad(self, request: Any, ctx: RequestContext) -> pb.RepositoryModelLoadResponse:
        await self._v2.load(request.model_name)
        return pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=True)

    @rpc
    async def RepositoryModelUnload(
        self, request: Any, ctx: RequestContext
    ) -> pb.RepositoryModelUnloadResponse:
        await self._v2.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=True)


def _read_tensors(request: Any) -> None:
    """Check datatypes and ``raw_input_contents``, and copy raw BYTES data into ``contents`` as
    elements (the door reads every tensor from its data); other raw datatypes are left to the
    door's datatype check, which refuses them for every model here."""
    for tensor in request.inputs:
        if to_np_dtype(tensor.datatype.upper()) is None:
            raise InvalidInput(f"input {tensor.name!r} has an unknown datatype {tensor.datatype!r}")
        tensor.datatype = tensor.datatype.upper()  # kserve reads contents by the upper-case name
    raw = request.raw_input_contents
    if not raw:
        return
    if len(raw) != len(request.inputs):
        raise InvalidInput(
            f"the request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents; "
            "with raw contents, every input needs exactly one"
        )
    for tensor, data in zip(request.inputs, raw, strict=True):
        if tensor.HasField("contents"):
            raise InvalidInput(f"input {tensor.name!r} has both contents and raw_input_contents")
        if tensor.datatype.upper() == "BYTES":
            count = math.prod(checked_shape(tensor.shape, tensor.name))
            tensor.contents.bytes_contents.extend(split_bytes_elements(data, tensor.name, count))
