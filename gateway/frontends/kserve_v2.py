"""KServe's Open Inference Protocol v2, the protocol-neutral part of the door: the tensor view of
each model, checking an ``InferRequest`` (kserve.protocol.infer_type) and running it through the
core (``TaskService``), so v2 rows share the per-model batcher with every other door.

Tensors per model, from the first of its manifest's tasks that has them:

- embedding: ``text`` BYTES [-1] -> ``embedding`` FP32 [-1, -1] (a row per text; the width is
  -1 in metadata, known only once the model ran);
- text-classification: ``text`` BYTES [-1] -> ``label`` BYTES [-1] (each text's top label) and
  ``score`` FP32 [-1] (its probability);
- text-generation: ``text_input`` BYTES [1] -> ``text_output`` BYTES [1] (Triton's generate
  extension's names; KServe's huggingface server takes any input name and answers ``output-0``).

A model with none of these tasks has empty metadata and answers TaskNotSupported to ``infer``.
Request parameters (gRPC's ``InferParameter`` has no float: floats may be numeric strings):
encoders take ``truncate_input_tokens``; generation takes Caikit's generation parameters
(``max_new_tokens`` or Triton's ``max_tokens``, ``min_new_tokens``, ``truncate_input_tokens``,
``decoding_method``, ``temperature``, ``top_k``, ``top_p``, ``typical_p``, ``repetition_penalty``,
``seed``, ``max_time``, ``stop_sequences`` as a JSON array of strings or one string,
``include_stop_sequence``, ``preserve_input_text``); without ``decoding_method`` a sampling
parameter (temperature other than 0, top_k, top_p, typical_p, seed) selects SAMPLING.
``binary_data_output``, ``priority``, ``timeout`` and ``content_type`` belong to the protocol;
other names are refused. Response parameters: ``input_token_count``, and for generation
``finish_reason``, ``generated_tokens`` and ``seed`` (a string: a uint64 overflows int64_param).
The served version is "1" (another is ModelNotFound); a model is *ready* when it is loaded, and
an inference request loads it on demand either way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from kserve.protocol.infer_type import (
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    to_http_parameters,
)

from gateway import __version__
from gateway.core import RequestContext, TaskService
from gateway.errors import InvalidInput, ModelNotFound, TaskNotSupported, Unavailable
from gateway.frontends.kserve_v2_tensors import (
    ENCODER_TYPES,
    PROTOCOL_PARAMETERS,
    SIGNATURES,
    TEXT,
    Outputs,
    Params,
    generation_params,
    inputs_by_spec,
    read_texts,
    requested_outputs,
    signature_for,
    typed_parameters,
)
from gateway.models.management import ModelManagement
from gateway.models.store import ManifestError, ModelManifest
from gateway.ops.access import current_tenant
from gateway.tasks import Task

CLASSIFY_CONCURRENCY = 16  # rows of one request classified at once (they share batches)
SERVER_NAME = "taskgate"
PLATFORM = "taskgate"
SERVED_VERSION = "1"
EXTENSIONS = ("model_repository_extension", "binary_tensor_data")


class KServeV2Service:
    """What both v2 transports call: health and metadata, repository load / unload, infer."""

    def __init__(self, core: TaskService, management: ModelManagement) -> None:
        self._core = core
        self._management = management

    # -- server, models ------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    async def model_names(self) -> list[str]:
        models = await asyncio.to_thread(self._core.registry.store.model_ids)
        adapters = self._core.adapters
        tenant = current_tenant()
        names = await asyncio.to_thread(adapters.visible_names, tenant) if adapters is not None else []
        return models + [name for name in names if name not in models]

    async def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        tasks, _, versions = await self._served(name, version)
        sig = signature_for(tasks)
        return {
            "name": name,
            "versions": versions,
            "platform": PLATFORM,
            "inputs": [spec.as_dict() for spec in sig.inputs],
            "outputs": [spec.as_dict() for spec in sig.outputs],
        }

    async def model_ready(self, name: str, version: str | None) -> bool:
        await self._served(name, version)
        if not self._core.registry.store.exists(name):  # a tuned adapter: served on demand
            return True
        return (await self._core.registry.model_status(name)).state == "LOADED"

    async def load(self, name: str) -> None:
        await self._manifest(name, None)
        await self._management.load(name)

    async def unload(self, name: str) -> None:
        await self._manifest(name, None)
        await self._management.unload(name)

    # -- inference -----------------------------------------------------------------------
    async def infer(self, ctx: RequestContext, request: InferRequest, version: str | None) -> InferResponse:
        name = request.model_name
        tasks, model_id, _ = await self._served(name, version)
        sig = signature_for(tasks)
        if sig.task is None:
            raise TaskNotSupported(
                f"model {name!r} serves no task the v2 protocol maps to tensors "
                f"({', '.join(task.value for task in SIGNATURES)})"
            )
        inputs = inputs_by_spec(request, sig, name)
        wanted = requested_outputs(request, sig, name)
        params = to_http_parameters(request.parameters or {})
        if not isinstance(params.get("binary_data_output", False), bool):
            raise InvalidInput("parameter binary_data_output must be true or false")
        params = {key: value for key, value in params.items() if key not in PROTOCOL_PARAMETERS}
        if sig.task is Task.EMBEDDING:
            outputs, extra = await self._embed(ctx, model_id, read_texts(inputs["text"], TEXT), params)
        elif sig.task is Task.TEXT_CLASSIFICATION:
            outputs, extra = await self._classify(ctx, model_id, read_texts(inputs["text"], TEXT), params)
        else:
            prompt = read_texts(inputs["text_input"], sig.inputs[0])[0]
            outputs, extra = await self._generate(ctx, model_id, prompt, params)
        return InferResponse(
            response_id=request.id or ctx.request_id,
            model_name=name,
            model_version=model_id.partition("@")[2] or version or SERVED_VERSION,
            infer_outputs=[outputs[out] for out, _ in wanted],
            parameters=extra,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=[RequestedOutput(out, {"binary_data": binary}) for out, binary in wanted],
        )

    async def _embed(self, ctx: RequestContext, name: str, texts: list[str], params: Params) -> Outputs:
        truncate = typed_parameters(params, ENCODER_TYPES, name).get("truncate_input_tokens")
        result = await self._core.embed(ctx, name, texts, truncate)
        matrix = np.stack(result.vectors).astype(np.float32)
        out = InferOutput("embedding", list(matrix.shape), "FP32", data=matrix.ravel().tolist())
        return {"embedding": out}, {"input_token_count": result.input_token_count}

    async def _classify(self, ctx: RequestContext, name: str, texts: list[str], params: Params) -> Outputs:
        truncate = typed_parameters(params, ENCODER_TYPES, name).get("truncate_input_tokens")
        # the core classifies one text per call: every row has its own call, all at once up to a
        # bound, so the rows share the model's batches. The whole request is checked first.
        self._core._check_texts(texts, "text")
        slots = asyncio.Semaphore(CLASSIFY_CONCURRENCY)

        async def one(text: str) -> tuple[str, float]:
            async with slots:
                return (await self._core.classify(ctx, name, text, truncate)).labels[0]

        tasks = [asyncio.ensure_future(one(text)) for text in texts]
        try:
            top = await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # one row failed: the others stop too
                task.cancel()
        return {
            "label": InferOutput("label", [len(top)], "BYTES", data=[label for label, _ in top]),
            "score": InferOutput("score", [len(top)], "FP32", data=[score for _, score in top]),
        }, {}

    async def _generate(self, ctx: RequestContext, name: str, prompt: str, params: Params) -> Outputs:
        result = await self._core.generate(ctx, name, prompt, generation_params(params, name))
        extra: dict[str, Any] = {
            "finish_reason": result.finish_reason.name,
            "generated_tokens": result.generated_tokens,
            "input_token_count": result.input_token_count,
        }
        if result.seed is not None:
            extra["seed"] = str(result.seed)
        out = InferOutput("text_output", [1], "BYTES", data=[result.generated_text])
        return {"text_output": out}, extra

    async def _served(self, name: str, version: str | None) -> tuple[frozenset[Task], str, list[str]]:
        """The tasks ``name`` serves, the model id the core is called with, and its versions. A
        store model serves version "1"; a tuned adapter's versions are its published ones
        (``/v2/models/{name}/versions/{N}`` is the adapter ``name@N``)."""
        adapters = self._core.adapters
        if adapters is None or self._core.registry.store.exists(name) or not adapters.store.exists(name):
            return (await self._manifest(name, version)).tasks, name, [SERVED_VERSION]
        if version and (not version.isdigit() or len(version) > 9):
            raise ModelNotFound(f"adapter {name!r} has no version {version!r}")
        reference = f"{name}@{int(version)}" if version else name
        target = await adapters.resolve(reference, current_tenant())
        published = await asyncio.to_thread(adapters.store.versions, name)
        return (
            target.tasks,
            target.version.reference if version else name,
            [str(v.version) for v in published],
        )

    async def _manifest(self, name: str, version: str | None) -> ModelManifest:
        """The model's manifest (NOT_FOUND for an unknown model or another version)."""
        if not name:
            raise InvalidInput("the request names no model")
        try:
            manifest = await asyncio.to_thread(self._core.registry.store.manifest, name)
        except ManifestError as exc:
            raise Unavailable(f"model {name!r} cannot be served: {exc}") from None
        if version not in (None, "", SERVED_VERSION):
            raise ModelNotFound(
                f"model {name!r} has no version {version!r}; it serves version {SERVED_VERSION}"
            )
        return manifest
