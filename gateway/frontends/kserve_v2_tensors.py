"""The v2 door's tensor view, independent of transport and of the core: each model's tensor
signature (see gateway/frontends/kserve_v2.py for the names), checking an ``InferRequest``'s inputs,
shapes and BYTES data (JSON or binary), and reading its parameters into typed values."""

from __future__ import annotations

import contextlib
import json
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kserve.errors import InferenceError as KServeInferenceError
from kserve.errors import InvalidInput as KServeInvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest

from gateway.errors import InvalidInput
from gateway.generation.params import GenerationParams
from gateway.tasks import Task

MAX_DATA_DEPTH = 8  # nesting of JSON tensor data (each level is one dimension)
PROTOCOL_PARAMETERS = frozenset({"binary_data_output", "priority", "timeout", "content_type"})
_SAMPLING_KEYS = ("temperature", "top_k", "top_p", "typical_p", "seed")
_GENERATION_TYPES: dict[str, type] = {
    **dict.fromkeys(("max_new_tokens", "min_new_tokens", "truncate_input_tokens", "top_k", "seed"), int),
    **dict.fromkeys(("temperature", "top_p", "typical_p", "repetition_penalty", "max_time"), float),
    **dict.fromkeys(("include_stop_sequence", "preserve_input_text"), bool),
    "decoding_method": str,
    "stop_sequences": list,
}
ENCODER_TYPES: dict[str, type] = {"truncate_input_tokens": int}
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


TEXT = TensorSpec("text", "BYTES", (-1,))
SIGNATURES = {
    Task.EMBEDDING: Signature(Task.EMBEDDING, (TEXT,), (TensorSpec("embedding", "FP32", (-1, -1)),)),
    Task.TEXT_CLASSIFICATION: Signature(
        Task.TEXT_CLASSIFICATION,
        (TEXT,),
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


def inputs_by_spec(request: InferRequest, sig: Signature, model: str) -> dict[str, InferInput]:
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


def requested_outputs(request: InferRequest, sig: Signature, model: str) -> list[tuple[str, bool]]:
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


def typed_parameters(params: dict[str, Any], types: dict[str, type], model: str) -> dict[str, Any]:
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
    values = typed_parameters(given, _GENERATION_TYPES, model)
    if "decoding_method" not in values:
        sampling = any(key in values for key in _SAMPLING_KEYS) and values.get("temperature") != 0
        values["decoding_method"] = "SAMPLING" if sampling else "GREEDY"
    return GenerationParams.from_request(values)
