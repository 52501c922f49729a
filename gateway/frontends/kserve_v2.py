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
import contextlib
import json
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.errors import InferenceError as KServeInferenceError
from kserve.errors import InvalidInput as KServeInvalidInput
from kserve.protocol.infer_type import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    to_http_parameters,
)

from gateway import __version__
from gateway.core import RequestContext, TaskService
from gateway.errors import InvalidInput, ModelNotFound, TaskNotSupported, Unavailable
from gateway.generation.params import GenerationParams
from gateway.management import ModelManagement
from gateway.store import ManifestError, ModelManifest
from gateway.tasks import Task

SERVER_NAME = "taskgate"
PLATFORM = "taskgate"
SERVED_VERSION = "1"
EXTENSIONS = ("model_repository_extension", "binary_tensor_data")
MAX_DATA_DEPTH = 8  # nesting of JSON tensor data (each level is one dimension)
CLASSIFY_CONCURRENCY = 16  # rows of one request classified at once (they share batches)
PROTOCOL_PARAMETERS = frozenset({"binary_data_output", "priority", "timeout", "content_type"})
_SAMPLING_KEYS = ("temperature", "top_k", "top_p", "typical_p", "seed")
_GENERATION_TYPES: dict[str, type] = {
    **dict.fromkeys(("max_new_tokens", "min_new_tokens", "truncate_input_tokens", "top_k", "seed"), int),
    **dict.fromkeys(("temperature", "top_p", "typical_p", "repetition_penalty", "max_time"), float),
    **dict.fromkeys(("include_stop_sequence", "preserve_input_text"), bool),
    "decoding_method": str,
    "stop_sequences": list,
}
_ENCODER_TYPES: dict[str, type] = {"truncate_input_tokens": int}
Params = dict[str, Any]
Outputs = tuple[dict[str, InferOutput], Params]  # outputs by name, response parameters


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    task: Task | None  # the task the tensors stand for; None: no task of the model maps to tensors
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


_TEXT = TensorSpec("text", "BYTES", (-1,))
SIGNATURES = {
    Task.EMBEDDING: Signature(Task.EMBEDDING, (_TEXT,), (TensorSpec("embedding", "FP32", (-1, -1)),)),
    Task.TEXT_CLASSIFICATION: Signature(
        Task.TEXT_CLASSIFICATION,
        (_TEXT,),
        (TensorSpec("label", "BYTES", (-1,)), TensorSpec("score", "FP32", (-1,))),
    ),
    Task.TEXT_GENERATION: Signature(
        Task.TEXT_GENERATION,
        (TensorSpec("text_input", "BYTES", (1,)),),
        (TensorSpec("text_output", "BYTES", (1,)),),
    ),
}
NO_SIGNATURE = Signature(None, (), ())


def signature_for(tasks: frozenset[Task]) -> Signature:
    return next((sig for task, sig in SIGNATURES.items() if task in tasks), NO_SIGNATURE)


@contextlib.contextmanager
def kserve_errors() -> Iterator[None]:
    """kserve's own refusals (from its protocol types) as our InvalidInput."""
    try:
        yield
    except (KServeInvalidInput, KServeInferenceError) as exc:
        raise InvalidInput(str(exc)) from None


def checked_shape(shape: Sequence[Any], name: str) -> list[int]:
    dims = list(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise InvalidInput(f"input '{name}' has shape {dims}: sizes must be non-negative integers")
    return dims


def split_bytes_elements(raw: bytes, name: str, expected: int) -> list[bytes]:
    """BYTES tensor data in binary form: elements, each a 4-byte little-endian length and then
    that many bytes. Refuses a truncated prefix, a length past the end and extra elements."""
    elements: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if len(elements) == expected:
            raise InvalidInput(f"input '{name}' holds more than the {expected} BYTES elements its shape says")
        if end - offset < 4:
            raise InvalidInput(
                f"input '{name}': BYTES element {len(elements)} has a truncated length prefix "
                f"({end - offset} of 4 bytes)"
            )
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if length > end - offset:
            raise InvalidInput(
                f"input '{name}': BYTES element {len(elements)} declares {length} bytes "
                f"but only {end - offset} remain"
            )
        elements.append(raw[offset : offset + length])
        offset += length
    if len(elements) != expected:
        raise InvalidInput(f"input '{name}' holds {len(elements)} BYTES elements; its shape needs {expected}")
    return elements


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
        names = await asyncio.to_thread(adapters.store.names) if adapters is not None else []
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
        inputs = _inputs_by_spec(request, sig, name)
        wanted = _requested_outputs(request, sig, name)
        params = to_http_parameters(request.parameters or {})
        if not isinstance(params.get("binary_data_output", False), bool):
            raise InvalidInput("parameter binary_data_output must be true or false")
        params = {key: value for key, value in params.items() if key not in PROTOCOL_PARAMETERS}
        if sig.task is Task.EMBEDDING:
            outputs, extra = await self._embed(ctx, model_id, read_texts(inputs["text"], _TEXT), params)
        elif sig.task is Task.TEXT_CLASSIFICATION:
            outputs, extra = await self._classify(ctx, model_id, read_texts(inputs["text"], _TEXT), params)
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
        truncate = _typed(params, _ENCODER_TYPES, name).get("truncate_input_tokens")
        result = await self._core.embed(ctx, name, texts, truncate)
        matrix = np.stack(result.vectors).astype(np.float32)
        out = InferOutput("embedding", list(matrix.shape), "FP32", data=matrix.ravel().tolist())
        return {"embedding": out}, {"input_token_count": result.input_token_count}

    async def _classify(self, ctx: RequestContext, name: str, texts: list[str], params: Params) -> Outputs:
        truncate = _typed(params, _ENCODER_TYPES, name).get("truncate_input_tokens")
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
        target = await adapters.resolve(reference)
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


def read_texts(tensor: InferInput, spec: TensorSpec) -> list[str]:
    """The texts of a BYTES input, checked against the model's tensor spec."""
    name = spec.name
    if tensor.datatype != spec.datatype:
        raise InvalidInput(f"input '{name}' must have datatype {spec.datatype}, got {tensor.datatype!r}")
    shape = checked_shape(tensor.shape, name)
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    ):
        raise InvalidInput(
            f"input '{name}' has shape {shape}; the model takes {list(spec.shape)} (-1: any size)"
        )
    values = _flatten(tensor.data, name)
    if len(values) != math.prod(shape):
        raise InvalidInput(
            f"input '{name}' holds {len(values)} elements; its shape {shape} needs {math.prod(shape)}"
        )
    return [_text(value, name, index) for index, value in enumerate(values)]


def _flatten(data: Any, name: str, depth: int = 0) -> list[Any]:
    """Tensor data as a flat row-major list (JSON data may nest one list per dimension)."""
    if not isinstance(data, list | tuple):
        raise InvalidInput(f"input '{name}': data must be a list")
    if depth > MAX_DATA_DEPTH:
        raise InvalidInput(f"input '{name}': data nests deeper than {MAX_DATA_DEPTH} levels")
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list | tuple):
            flat.extend(_flatten(item, name, depth + 1))
        else:
            flat.append(item)
    return flat


def _text(value: Any, name: str, index: int) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"input '{name}' element {index} is not valid UTF-8") from None
    if not isinstance(value, str):  # (JSON strings: both JSON parsers refuse lone surrogates)
        raise InvalidInput(f"input '{name}' element {index} must be a string, got {type(value).__name__}")
    return value


def _inputs_by_spec(request: InferRequest, sig: Signature, model: str) -> dict[str, InferInput]:
    names = [spec.name for spec in sig.inputs]
    found: dict[str, InferInput] = {}
    for tensor in request.inputs:
        if tensor.name not in names or tensor.name in found:
            fault = "is given twice" if tensor.name in found else f"is not an input of model {model!r}"
            raise InvalidInput(f"input {tensor.name!r} {fault}; its inputs: {', '.join(names)}")
        found[tensor.name] = tensor
    for name in set(names) - set(found):
        raise InvalidInput(f"input '{name}' is missing; model {model!r} takes: {', '.join(names)}")
    return found


def _requested_outputs(request: InferRequest, sig: Signature, model: str) -> list[tuple[str, bool]]:
    """(output name, binary) for each output to send: the requested ones, else all. Over REST an
    output's ``binary_data`` wins over the request's ``binary_data_output``; over gRPC outputs are
    raw exactly when the inputs were (kserve's rule)."""
    default = bool(request.use_binary_outputs)
    names = [spec.name for spec in sig.outputs]
    if not request.request_outputs:
        return [(out, default) for out in names]
    wanted: list[tuple[str, bool]] = []
    for requested in request.request_outputs:
        if requested.name not in names:
            raise InvalidInput(
                f"model {model!r} has no output {requested.name!r}; its outputs: {', '.join(names)}"
            )
        binary = default if request.from_grpc or requested.binary_data is None else requested.binary_data
        if not isinstance(binary, bool):
            raise InvalidInput(f"output {requested.name!r}: parameter binary_data must be true or false")
        if requested.name not in {out for out, _ in wanted}:
            wanted.append((requested.name, binary))
    return wanted


def _typed(params: dict[str, Any], types: dict[str, type], model: str) -> dict[str, Any]:
    """Parameters converted to their types (gRPC sends floats as strings); unknown ones refused."""
    unknown = sorted(set(params) - set(types))
    if unknown:
        raise InvalidInput(
            f"model {model!r} takes no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {', '.join(sorted(types))}"
        )
    return {key: _coerce(key, value, types[key]) for key, value in params.items()}


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return value  # GenerationParams refuses a value of the wrong type, naming it
    if kind is str:
        return value
    if kind is list:
        if not isinstance(value, str):
            raise InvalidInput(f"parameter {key} must be a JSON array of strings, or one string")
        if not value.startswith("["):
            return [value]
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise InvalidInput(f"parameter {key} is not a valid JSON array: {value[:80]!r}") from None
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return kind(value.strip())
    expected = "an integer" if kind is int else "a number"
    raise InvalidInput(f"parameter {key} must be {expected}, got {value!r}")


def generation_params(params: dict[str, Any], model: str) -> GenerationParams:
    given = dict(params)
    if "max_tokens" in given:
        if "max_new_tokens" in given:
            raise InvalidInput("give max_new_tokens or its alias max_tokens, not both")
        given["max_new_tokens"] = given.pop("max_tokens")
    values = _typed(given, _GENERATION_TYPES, model)
    if "decoding_method" not in values:
        sampling = any(key in values for key in _SAMPLING_KEYS) and values.get("temperature") != 0
        values["decoding_method"] = "SAMPLING" if sampling else "GREEDY"
    return GenerationParams.from_request(values)
