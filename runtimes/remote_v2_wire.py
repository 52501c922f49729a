"""Clients of a remote KServe v2 (Open Inference Protocol) model: REST and gRPC, synchronous.

Both send named integer tensors and read one named float output back, and both turn every way a
remote can fail (connection refused, a timeout, an error status, a malformed answer) into
``RuntimeUnavailable`` whose message names the remote and its reason. The gRPC client uses
kserve's generated ``grpc_predict_v2_pb2`` messages with ``raw_input_contents``; the REST
client speaks JSON or the binary tensor extension (``Inference-Header-Content-Length``).
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtimes.base import RuntimeUnavailable

FLOATS = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
BINARY_HEADER = "inference-header-content-length"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RemoteModel:
    """What a remote says about its model (GET /v2/models/{name}, ModelMetadata)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class V2Client(abc.ABC):
    def __init__(self, where: str, model_name: str, model_version: str) -> None:
        self.where = where  # the remote, as messages name it
        self.model_name = model_name
        self.model_version = model_version

    @abc.abstractmethod
    def check_ready(self, timeout_s: float) -> None:
        """Return when the remote model is ready; else raise RuntimeUnavailable saying why."""

    @abc.abstractmethod
    def metadata(self, timeout_s: float) -> RemoteModel: ...

    @abc.abstractmethod
    def infer(self, inputs: dict[str, np.ndarray], output: str, timeout_s: float) -> np.ndarray:
        """The named output of one inference, as a numpy array of its own shape."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def unavailable(self, reason: str) -> RuntimeUnavailable:
        return RuntimeUnavailable(f"remote model {self.model_name!r} at {self.where}: {reason}")


def _float_array(
    where: V2Client, name: str, datatype: str, shape: list[int], data: bytes | list[Any]
) -> np.ndarray:
    dtype = FLOATS.get(datatype)
    if dtype is None:
        raise where.unavailable(f"output {name!r} is {datatype}, not a float tensor")
    try:
        array = np.frombuffer(data, dtype=dtype) if isinstance(data, bytes) else np.asarray(data, dtype=dtype)
        return array.reshape(shape).astype(np.float32)
    except (ValueError, TypeError) as exc:
        raise where.unavailable(f"malformed output {name!r}: {exc}") from None


class RestV2Client(V2Client):
    def __init__(self, base_url: str, model_name: str, model_version: str, binary: bool) -> None:
        import httpx

        super().__init__(base_url, model_name, model_version)
        self._binary = binary
        path = f"/v2/models/{model_name}" + (f"/versions/{model_version}" if model_version else "")
        self._model_url = base_url.rstrip("/") + path  # joined by hand: httpx's base_url adds a "/"
        self._http = httpx.Client(follow_redirects=False)

    def check_ready(self, timeout_s: float) -> None:
        self._checked(self._call("GET", "/ready", timeout_s), "not ready: ")

    def metadata(self, timeout_s: float) -> RemoteModel:
        reply = self._checked(self._call("GET", "", timeout_s))
        try:
            body = reply.json()
            return RemoteModel(_specs(body.get("inputs")), _specs(body.get("outputs")))
        except (ValueError, AttributeError, TypeError, KeyError) as exc:
            raise self.unavailable(f"malformed metadata: {exc}") from None

    def infer(self, inputs: dict[str, np.ndarray], output: str, timeout_s: float) -> np.ndarray:
        tensors: list[dict[str, Any]] = []
        raw: list[bytes] = []
        for name, array in inputs.items():
            tensor: dict[str, Any] = {"name": name, "datatype": "INT64", "shape": list(array.shape)}
            if self._binary:
                raw.append(np.ascontiguousarray(array, dtype=np.int64).tobytes())
                tensor["parameters"] = {"binary_data_size": len(raw[-1])}
            else:
                tensor["data"] = array.ravel().tolist()
            tensors.append(tensor)
        wanted = {"name": output, "parameters": {"binary_data": self._binary}}
        header = json.dumps({"inputs": tensors, "outputs": [wanted]}).encode()
        if self._binary:
            headers = {"content-type": "application/octet-stream", BINARY_HEADER: str(len(header))}
        else:
            headers = {"content-type": "application/json"}
        reply = self._checked(self._call("POST", "/infer", timeout_s, b"".join([header, *raw]), headers))
        return self._read_output(reply.content, reply.headers.get(BINARY_HEADER), output)

    def close(self) -> None:
        self._http.close()

    def _call(
        self, method: str, path: str, timeout_s: float, body: bytes | None = None, headers: Any = None
    ) -> Any:
        import httpx

        try:
            url = self._model_url + path
            return self._http.request(method, url, content=body, headers=headers, timeout=timeout_s)
        except httpx.TimeoutException:
            raise self.unavailable(f"no answer within {timeout_s:.1f} s") from None
        except httpx.HTTPError as exc:
            raise self.unavailable(f"{type(exc).__name__}: {exc}") from None

    def _checked(self, reply: Any, what: str = "") -> Any:
        if reply.status_code != 200:
            try:
                detail = reply.json().get("error", "")
            except (ValueError, AttributeError):
                detail = reply.text
            raise self.unavailable(f"{what}HTTP {reply.status_code}: {str(detail)[:300]}")
        return reply

    def _read_output(self, content: bytes, json_length: str | None, output: str) -> np.ndarray:
        try:
            split = int(json_length) if json_length is not None else len(content)
            body = json.loads(content[:split])
            offset = split
            for tensor in body["outputs"]:
                size = (tensor.get("parameters") or {}).get("binary_data_size")
                data = content[offset : offset + int(size)] if size is not None else tensor.get("data")
                offset += int(size or 0)
                if tensor["name"] == output:
                    return _float_array(self, output, tensor["datatype"], tensor["shape"], data)
        except (ValueError, KeyError, TypeError) as exc:
            raise self.unavailable(f"malformed answer: {exc}") from None
        raise self.unavailable(f"the answer holds no output {output!r}")


class GrpcV2Client(V2Client):
    def __init__(self, target: str, model_name: str, model_version: str) -> None:
        import grpc
        from kserve.protocol.grpc import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc

        super().__init__(f"grpc://{target}", model_name, model_version)
        self._pb = grpc_predict_v2_pb2
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        )
        self._stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def check_ready(self, timeout_s: float) -> None:
        request = self._pb.ModelReadyRequest(name=self.model_name, version=self.model_version)
        if not self._rpc(self._stub.ModelReady, request, timeout_s).ready:
            raise self.unavailable("not ready")

    def metadata(self, timeout_s: float) -> RemoteModel:
        request = self._pb.ModelMetadataRequest(name=self.model_name, version=self.model_version)
        reply = self._rpc(self._stub.ModelMetadata, request, timeout_s)
        return RemoteModel(
            tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in reply.inputs),
            tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in reply.outputs),
        )

    def infer(self, inputs: dict[str, np.ndarray], output: str, timeout_s: float) -> np.ndarray:
        pb = self._pb
        request = pb.ModelInferRequest(
            model_name=self.model_name,
            model_version=self.model_version,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(name=name, datatype="INT64", shape=list(array.shape))
                for name, array in inputs.items()
            ],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=output)],
            raw_input_contents=[np.ascontiguousarray(a, dtype=np.int64).tobytes() for a in inputs.values()],
        )
        reply = self._rpc(self._stub.ModelInfer, request, timeout_s)
        for index, tensor in enumerate(reply.outputs):
            if tensor.name != output:
                continue
            if index < len(reply.raw_output_contents):
                data: bytes | list[Any] = reply.raw_output_contents[index]
            else:
                data = list(getattr(tensor.contents, f"{tensor.datatype.lower()}_contents", []))
            return _float_array(self, output, tensor.datatype, list(tensor.shape), data)
        raise self.unavailable(f"the answer holds no output {output!r}")

    def close(self) -> None:
        self._channel.close()

    def _rpc(self, method: Any, request: Any, timeout_s: float) -> Any:
        import grpc

        try:
            return method(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise self.unavailable(f"no answer within {timeout_s:.1f} s") from None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            raise self.unavailable(f"{code.name if code else 'error'}: {str(details)[:300]}") from None


def _specs(tensors: Any) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t["shape"])) for t in tensors
    )


def client_for(url: str, model_name: str, model_version: str, binary: bool) -> V2Client:
    """The client for ``http(s)://host:port`` (REST) or ``grpc://host:port`` (gRPC)."""
    if url.startswith("grpc://"):
        return GrpcV2Client(url.removeprefix("grpc://").rstrip("/"), model_name, model_version)
    return RestV2Client(url, model_name, model_version, binary)
