"""``TaskgateModel``: one Taskgate model folder served as a ``kserve.Model`` (OIP v2).

The folder is what the model store holds (a ``manifest.json`` and the files it names); the
runtime is built from it exactly as the gateway's registry builds one (the manifest parsed by
``ModelManifest``, its settings checked, the engine from ``runtimes.catalog``). Encoders only:
the v2 signature is in ``runtimes.kserve.tensors``. Model work runs in a small thread pool of
its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from runtimes.base import EncoderRuntime, Runtime, ThreadSettings, TokenizedBatch
from runtimes.kserve.tensors import BadTensors, Signature, batch_from_tensors

log = logging.getLogger(__name__)


def runtime_from_folder(
    folder: Path, work_dir: Path, name: str, threads: ThreadSettings
) -> Runtime[Any, Any]:
    """The (not yet loaded) runtime a model folder's manifest describes, as the registry builds it."""
    from gateway.errors import InvalidInput as BadSettings
    from gateway.models.model_settings import check_settings
    from gateway.models.store import MANIFEST, ManifestError, ModelManifest, read_manifest_data
    from runtimes.catalog import factory_for

    path = folder / MANIFEST
    data = read_manifest_data(folder)
    # KServe mounts the folder as /mnt/models: the manifest's own id names it, not the folder
    given = data.get("id")
    model_id = given if isinstance(given, str) else name
    manifest = ModelManifest.parse(data, folder, model_id)
    try:
        check_settings(manifest.runtime, manifest.settings)
    except BadSettings as exc:
        raise ManifestError(f"{path}: {exc.message}") from None
    factory = factory_for(manifest.runtime)
    return factory(source=manifest.source, work_dir=work_dir, options=manifest.settings, threads=threads)


class TaskgateModel(Model):
    """A Taskgate encoder runtime behind KServe's data plane (REST and gRPC v2)."""

    def __init__(self, name: str, model_dir: Path, work_dir: Path, threads: ThreadSettings) -> None:
        super().__init__(name)
        self._model_dir = model_dir
        self._work_dir = work_dir
        self._threads = threads
        self._runtime: EncoderRuntime | None = None
        self._signature: Signature | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- kserve.Model --------------------------------------------------------------------
    def load(self) -> bool:
        runtime = runtime_from_folder(self._model_dir, self._work_dir, self.name, self._threads)
        if not isinstance(runtime, EncoderRuntime):
            raise ValueError(
                f"{self._model_dir}: runtime {type(runtime).__name__} is not an encoder; "
                "taskgate kserve serves encoders (embedding and classification heads) only"
            )
        runtime.load()
        probe = runtime.run_batch(runtime.tokenize(["warm-up"], None))  # warms up; gives the width
        self._signature = Signature.of(runtime, int(probe.shape[1]))
        self._runtime = runtime
        self._executor = ThreadPoolExecutor(self._threads.model_workers, thread_name_prefix="model")
        self.ready = True
        log.info("model %s ready: %s", self.name, self._signature)
        return self.ready

    def stop(self) -> None:
        self.ready = False
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._runtime is not None:
            self._runtime.unload()
            self._runtime = None

    def get_input_types(self) -> list[dict[str, Any]]:
        return [tensor.as_dict() for tensor in self._loaded()[1].inputs]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [self._loaded()[1].output.as_dict()]

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("this model speaks the v2 protocol: POST /v2/models/{name}/infer")
        runtime, signature = self._loaded()
        loop = asyncio.get_running_loop()
        # decoding and tokenizing texts costs CPU too: off the event loop, with the model run
        batch = await loop.run_in_executor(self._executor, self._batch, payload, runtime, signature)
        rows = await loop.run_in_executor(self._executor, runtime.run_batch, batch)
        values = np.ascontiguousarray(rows, dtype=np.float32)
        output = InferOutput(signature.output.name, list(values.shape), signature.output.datatype)
        # raw bytes when the caller sent raw (gRPC) or asked for binary outputs (REST), else a list
        output.set_data_from_numpy(values, binary_data=payload.use_binary_outputs)
        return InferResponse(
            response_id=payload.id or uuid.uuid4().hex,
            model_name=self.name,
            infer_outputs=[output],
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )

    # -- helpers -------------------------------------------------------------------------
    def _loaded(self) -> tuple[EncoderRuntime, Signature]:
        if self._runtime is None or self._signature is None:
            raise RuntimeError(f"model {self.name!r} is not loaded")
        return self._runtime, self._signature

    @staticmethod
    def _batch(request: InferRequest, runtime: EncoderRuntime, signature: Signature) -> TokenizedBatch:
        wanted = [output.name for output in request.request_outputs or []]
        if any(name != signature.output.name for name in wanted):
            raise InvalidInput(f"unknown output {wanted!r}; this model gives {signature.output.name!r}")
        inputs = []
        for tensor in request.inputs:
            try:
                array = tensor.as_numpy()
            except Exception as exc:  # kserve's decoding: a wrong datatype, data not fitting the shape
                raise InvalidInput(f"input {tensor.name!r} cannot be read: {exc}") from None
            inputs.append((tensor.name, tensor.datatype, array))
        try:
            return batch_from_tensors(inputs, runtime, signature)
        except BadTensors as exc:
            raise InvalidInput(str(exc)) from None
