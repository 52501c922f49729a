"""The gRPC server (grpc.aio): every gRPC door on one server, with health and reflection.

The doors: Caikit's NlpService (caikit_nlp) and InfoService, model management, ModelMesh's
runtime SPI, KServe v2; when the gateway tunes, Caikit's training services and Taskgate's tuning
service. An access gate (API keys, shutdown) admits each call, then a request guard checks
sizes and parses before any servicer runs.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.core import TaskService
from gateway.frontends.grpc.access_gate import AccessGate
from gateway.frontends.grpc.caikit_nlp import NlpServicer
from gateway.frontends.grpc.caikit_training import CaikitTrainingServicer, TrainingManagementServicer
from gateway.frontends.grpc.guard import DEPLOY_METHOD, TRAIN_METHODS, RequestGuard
from gateway.frontends.grpc.kserve_v2 import SERVICE_NAME as KSERVE_V2_SERVICE
from gateway.frontends.grpc.kserve_v2 import add_kserve_v2_servicer
from gateway.frontends.grpc.management import (
    CaikitModelManagementServicer,
    ModelControlServicer,
    ModelMeshRuntimeServicer,
)
from gateway.frontends.grpc.observe import ObserveCalls
from gateway.frontends.grpc.tuning import TuningServicer
from gateway.frontends.kserve_v2 import KServeV2Service
from gateway.models.info import models_info, runtime_info
from gateway.models.management import ModelManagement
from gateway.ops import tls
from gateway.ops.access import Admission
from gateway.ops.request_log import RequestObserver
from gateway.settings import RegistrySettings, ServerSettings
from gateway.tuning.service import TuningService
from gateway.wire import caikit_data_model_common_runtime_pb2 as runtime_pb2
from gateway.wire import caikit_runtime_info_pb2, caikit_runtime_info_pb2_grpc
from gateway.wire import caikit_runtime_models_pb2 as caikit_models_pb2
from gateway.wire import caikit_runtime_models_pb2_grpc as caikit_models_grpc
from gateway.wire import caikit_runtime_nlp_pb2 as nlp_pb2
from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc
from gateway.wire import caikit_runtime_nlp_training_pb2 as train_pb2
from gateway.wire import caikit_runtime_nlp_training_pb2_grpc as train_grpc
from gateway.wire import caikit_runtime_training_pb2 as training_pb2
from gateway.wire import caikit_runtime_training_pb2_grpc as training_grpc
from gateway.wire import modelmesh_model_runtime_pb2 as mmesh_pb2
from gateway.wire import modelmesh_model_runtime_pb2_grpc as mmesh_grpc
from gateway.wire import taskgate_management_pb2 as control_pb2
from gateway.wire import taskgate_management_pb2_grpc as control_grpc
from gateway.wire import taskgate_tuning_pb2 as tuning_pb2
from gateway.wire import taskgate_tuning_pb2_grpc as tuning_grpc

log = logging.getLogger(__name__)


class InfoServicer(caikit_runtime_info_pb2_grpc.InfoServiceServicer):
    def __init__(self, core: TaskService) -> None:
        self._core = core

    async def GetRuntimeInfo(self, request: Any, context: Any) -> runtime_pb2.RuntimeInfoResponse:
        info = runtime_info()
        return runtime_pb2.RuntimeInfoResponse(
            runtime_version=info["runtime_version"], python_packages=info["python_packages"]
        )

    async def GetModelsInfo(self, request: Any, context: Any) -> runtime_pb2.ModelInfoResponse:
        wanted = set(request.model_ids)
        models = [
            runtime_pb2.ModelInfo(**info)
            for info in await models_info(self._core.registry)
            if not wanted or info["name"] in wanted
        ]
        return runtime_pb2.ModelInfoResponse(models=models)


SERVICE_NAMES = (
    nlp_pb2.DESCRIPTOR.services_by_name["NlpService"].full_name,
    caikit_runtime_info_pb2.DESCRIPTOR.services_by_name["InfoService"].full_name,
    caikit_models_pb2.DESCRIPTOR.services_by_name["ModelManagement"].full_name,
    control_pb2.DESCRIPTOR.services_by_name["ModelControl"].full_name,
    mmesh_pb2.DESCRIPTOR.services_by_name["ModelRuntime"].full_name,
    KSERVE_V2_SERVICE,
)
TUNING_SERVICE_NAMES = (  # served when the gateway tunes
    train_pb2.DESCRIPTOR.services_by_name["NlpTrainingService"].full_name,
    training_pb2.DESCRIPTOR.services_by_name["TrainingManagement"].full_name,
    tuning_pb2.DESCRIPTOR.services_by_name["Tuning"].full_name,
)


def modelmesh_address(endpoint: str, host: str) -> str:
    """ModelMesh's ``port:N`` / ``unix:PATH`` endpoint notation as a gRPC listen address."""
    if endpoint.startswith("port:"):
        return f"{host}:{int(endpoint[5:])}"
    if endpoint.startswith("unix:"):
        return endpoint
    raise ValueError(f"ModelMesh endpoint must be port:N or unix:PATH, got {endpoint!r}")


async def start_grpc(
    core: TaskService,
    management: ModelManagement,
    settings: ServerSettings,
    registry: RegistrySettings,
    tuning: TuningService | None = None,
    admission: Admission | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server; returns it and the bound port (useful when the port is 0).
    ``tuning`` (None: no tuning services) serves the training and adapter services;
    ``admission`` (None: none) checks keys and shutdown before the guard (access_gate)."""
    largest = max(settings.max_request_bytes, settings.max_deploy_bytes)
    large = {method: settings.max_deploy_bytes for method in (DEPLOY_METHOD, *TRAIN_METHODS)}
    guard = RequestGuard(settings.max_request_bytes, large)
    admission = admission if admission is not None else Admission()
    # outermost: every call is recorded (refusals included); the guard innermost
    observer = RequestObserver(core.metrics, access=settings.access_log, payloads=settings.log_payloads)
    server = grpc.aio.server(
        interceptors=[ObserveCalls(observer), AccessGate(admission), guard],
        # grpcio's own bound answers RESOURCE_EXHAUSTED itself, before any interceptor and with no
        # trailers (no retry-after): a backstop above the access gate's --max-inflight
        maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs or None,
        options=[
            ("grpc.max_receive_message_length", largest),
            # Responses may be larger than their request (rerank echoes the documents for every
            # query; HTTP serves those too), so they get the largest bound, not the task one.
            ("grpc.max_send_message_length", largest),
            ("grpc.so_reuseport", 0),
        ],
    )
    nlp_grpc.add_NlpServiceServicer_to_server(NlpServicer(core), server)
    caikit_runtime_info_pb2_grpc.add_InfoServiceServicer_to_server(InfoServicer(core), server)
    caikit_models_grpc.add_ModelManagementServicer_to_server(
        CaikitModelManagementServicer(management), server
    )
    control_grpc.add_ModelControlServicer_to_server(ModelControlServicer(management, core), server)
    mmesh = ModelMeshRuntimeServicer(management, registry.memory_budget_bytes, registry.max_concurrent_loads)
    mmesh_grpc.add_ModelRuntimeServicer_to_server(mmesh, server)
    add_kserve_v2_servicer(KServeV2Service(core, management), server)
    served: tuple[str, ...] = SERVICE_NAMES
    if tuning is not None:
        train_grpc.add_NlpTrainingServiceServicer_to_server(CaikitTrainingServicer(tuning), server)
        training_grpc.add_TrainingManagementServicer_to_server(TrainingManagementServicer(tuning), server)
        tuning_grpc.add_TuningServicer_to_server(TuningServicer(tuning), server)
        served = (*SERVICE_NAMES, *TUNING_SERVICE_NAMES)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (*served, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    credentials = tls.grpc_credentials(settings)
    address = f"{settings.host}:{settings.grpc_port}"
    if credentials is not None:
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC to {settings.host}:{settings.grpc_port}")
    if settings.modelmesh_endpoint:
        address = modelmesh_address(settings.modelmesh_endpoint, settings.host)
        if server.add_insecure_port(address) == 0 and not address.startswith("unix:"):
            raise OSError(f"cannot bind the ModelMesh endpoint {address}")
    await server.start()
    for name in ("", *served):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    admission.drain.on_begin(health_servicer.enter_graceful_shutdown)  # NOT_SERVING while draining
    return server, port
