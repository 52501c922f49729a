"""KServe's ModelServer, bound to one address.

kserve 0.21's ModelServer binds every interface (REST ``0.0.0.0``, gRPC ``[::]``) with no way to
choose. ``BoundModelServer`` starts the same REST and gRPC servers on ``host``: its ``start`` is
ModelServer.start for one worker process with the bind address added, and ``BoundGRPCServer``
is kserve's GRPCServer.start with ``host`` in the listen address. Everything else (the data
plane, the model repository, signal handling, shutdown) is kserve's own.
"""

from __future__ import annotations

import asyncio
from concurrent import futures
from typing import Any

from grpc import aio
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.model import BaseKServeModel
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.server import RESTServer


def listen_address(host: str, port: int) -> str:
    """``host:port`` as gRPC spells it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class BoundGRPCServer(GRPCServer):
    def __init__(self, host: str, port: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(port, *args, **kwargs)
        self._host = host

    async def start(self, max_workers: int) -> None:
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length")),
                ("grpc.so_reuseport", 0),  # a port another process holds is an error, not shared
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        address = listen_address(self._host, self._port)
        if not self._server.add_insecure_port(address):
            raise OSError(f"cannot listen for gRPC on {address}")
        await self._server.start()
        await self._server.wait_for_termination()


class BoundModelServer(ModelServer):
    """``ModelServer`` whose REST and gRPC servers listen on ``host`` only."""

    def __init__(self, host: str, **kwargs: Any) -> None:
        super().__init__(workers=1, **kwargs)
        self.host = host

    def start(self, models: list[BaseKServeModel]) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            workers=1,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        self._rest_server.config.host = self.host  # kserve hard-codes 0.0.0.0 in the config
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            from kserve.model_server import args as kserve_args  # its message-size flags

            self._grpc_server = BoundGRPCServer(
                self.host,
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=vars(kserve_args),
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())
