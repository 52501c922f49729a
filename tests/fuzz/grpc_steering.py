"""How the gRPC fuzzer's drawn messages are steered (tests/fuzz/test_grpc_fuzz.py).

Drawn requests are steered past the first checks so that they reach the models and the tuning
checks: model ids are mostly real ones, task inputs are set and mostly not empty, parameters in
range half the time; every field is still drawn, and random values stay among the choices. Fields
are steered by name, or by full name where a name means different things in different messages
(``name`` of a v2 model vs. of an adapter). Tuning requests name a base model that is not there
most of the time (``BASE_MODELS``), so that few drawn requests create a job.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message_factory, struct_pb2
from google.protobuf.message import Message
from hypothesis import strategies as st
from kserve.protocol.grpc import grpc_predict_v2_pb2

from tests.fuzz.conftest import (
    ADAPTER,
    ADAPTER_NAMES,
    BASE_MODELS,
    DATASET,
    GENERATION_MODEL,
    MODEL_IDS,
    SEEDED_JOB,
    UNKNOWN_JOB,
)
from tests.fuzz.proto_strategies import messages
from tests.models import CLASSIFIER, MINILM

# Generation runs SmolLM2 on CPU (~25 tokens/s here): drawn requests that would generate more new
# tokens than this (a larger value, or none: the default is 20) are sent with this many, to keep
# the module within CI's time; refused values (negative) are sent as drawn, and the parameter's
# whole range is tested in tests/gateway/generation/test_params.py.
MAX_NEW_TOKENS = 4
GENERATION = {"TextGenerationTaskPredict", "ServerStreamingTextGenerationTaskPredict"}


def _document(text: str, extra: struct_pb2.Struct) -> struct_pb2.Struct:
    document = struct_pb2.Struct()
    document.CopyFrom(extra)
    document["text"] = text
    return document


_MODEL_IDS = st.sampled_from([*MODEL_IDS, "no-such-model"]) | st.text(max_size=20)
_TEXT = st.text(min_size=1, max_size=40) | st.text(max_size=40)
_SOME_TEXT = st.text(min_size=1, max_size=40)
_INFER_MODELS = (MINILM, CLASSIFIER, GENERATION_MODEL, ADAPTER)
_ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
_ANY_INT = st.integers(-(2**63), 2**63 - 1)
_ADAPTERS = st.sampled_from(ADAPTER_NAMES) | st.text(max_size=20)
_JOB_IDS = st.sampled_from([SEEDED_JOB, UNKNOWN_JOB]) | st.text(max_size=30)
_VERSIONS = st.sampled_from(["1", "", "2"]) | st.text(max_size=5)
_V2 = "inference.ModelInferRequest"
# Drawn requests steered past the first checks so that they reach the models: model ids are
# mostly real ones, the task inputs are set and mostly not empty (every field is still drawn).
STEER = {
    "model_id": _MODEL_IDS,
    "modelId": _MODEL_IDS,
    "model_ids": _MODEL_IDS,
    "decoding_method": st.sampled_from(["GREEDY", "SAMPLING"]) | st.text(max_size=10),
    **{name: _TEXT for name in ("text", "texts", "query", "queries", "source_sentence", "source_sentences")},
    "sentences": _TEXT,
    "max_new_tokens": st.integers(-1, MAX_NEW_TOKENS) | st.integers(-(2**63), 2**63 - 1),
    "min_new_tokens": st.integers(-1, MAX_NEW_TOKENS) | st.integers(-(2**63), 2**63 - 1),
    # generation's other parameters: in range half the time (else one of a dozen always breaks)
    **{name: st.floats(0.05, 2.0) | _ANY_FLOAT for name in ("temperature", "repetition_penalty")},
    **{name: st.floats(0.01, 1.0) | _ANY_FLOAT for name in ("top_p", "typical_p")},
    "max_time": st.floats(0.5, 60.0) | _ANY_FLOAT,
    "top_k": st.integers(0, 50) | _ANY_INT,
    "truncate_input_tokens": st.integers(0, 64) | _ANY_INT,
    # rerank documents: objects with a text (and whatever else), or any Struct at all
    "google.protobuf.Struct": st.builds(_document, _TEXT, messages(struct_pb2.Struct.DESCRIPTOR))
    | messages(struct_pb2.Struct.DESCRIPTOR),
    # KServe v2: real models, version "1", the tensors the models take (text / text_input BYTES)
    "model_name": _MODEL_IDS,
    "inference.ModelReadyRequest.name": _MODEL_IDS,
    "inference.ModelMetadataRequest.name": _MODEL_IDS,
    "inference.ModelReadyRequest.version": _VERSIONS,
    "inference.ModelMetadataRequest.version": _VERSIONS,
    f"{_V2}.model_version": _VERSIONS,
    f"{_V2}.InferInputTensor.name": st.sampled_from(["text", "text_input"]) | st.text(max_size=10),
    f"{_V2}.InferInputTensor.datatype": st.sampled_from(["BYTES", "bytes", "FP32"]) | st.text(max_size=6),
    f"{_V2}.InferInputTensor.shape": st.integers(-1, 4) | st.integers(-(2**63), 2**63 - 1),
    f"{_V2}.InferRequestedOutputTensor.name": st.sampled_from(["embedding", "label", "score", "text_output"])
    | st.text(max_size=10),
    "inference.InferTensorContents.bytes_contents": _TEXT.map(lambda text: text.encode("utf-8"))
    | st.binary(max_size=40),
    # tuning: adapter names, base models that are mostly not there, the seeded job and dataset
    "caikit.runtime.Nlp.TextGenerationTaskPeftPromptTuningTrainRequest.model_name": _ADAPTERS,
    "taskgate.tuning.CreateJobRequest.name": _ADAPTERS,
    "taskgate.tuning.AdapterRequest.name": _ADAPTERS,
    "taskgate.tuning.RollbackAdapterRequest.name": _ADAPTERS,
    "base_model": st.sampled_from(BASE_MODELS) | st.text(max_size=20),
    "training_id": _JOB_IDS,
    "job_id": _JOB_IDS,
    "page_token": _JOB_IDS,
    "input": _TEXT,
    "output": _TEXT,
    "label": st.sampled_from(["positive", "negative"]) | st.text(max_size=10),
    "dataset": st.sampled_from([DATASET, "../" + DATASET, "missing.jsonl"]) | st.text(max_size=20),
    "filename": st.sampled_from([DATASET, "/etc/passwd", "missing.jsonl"]) | st.text(max_size=20),
    "file_id": st.just("file-" + "0" * 24) | st.text(max_size=30),
    "taskgate.tuning.CreateJobRequest.method": st.sampled_from([1, 2, 3, 4])
    | st.integers(-(2**31), 2**31 - 1),
    "taskgate.tuning.RollbackAdapterRequest.version": st.integers(-1, 3) | _ANY_INT,
    "tuning_type": st.sampled_from(["PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "prompt_tuning"])
    | st.text(max_size=10),
    "torch_dtype": st.sampled_from(["float32", ""]) | st.text(max_size=10),
    "num_epochs": st.integers(-1, 3) | _ANY_INT,
}
ALWAYS = frozenset(
    {"text", "texts", "query", "queries", "documents", "source_sentence", "source_sentences", "sentences"}
    | {"model_id", "modelId", "model_name", "base_model", "training_id", "job_id", "inputs"}
    | {"inference.ModelReadyRequest.name", "inference.ModelMetadataRequest.name"}
    | {f"{_V2}.InferInputTensor.{name}" for name in ("name", "datatype", "shape", "contents")}
    | {"caikit.runtime.Nlp.TextGenerationTaskPeftPromptTuningTrainRequest.parameters"}
    | {"caikit.runtime.Nlp.TextGenerationTaskPeftPromptTuningTrainParameters.train_stream"}
    | {f"taskgate.tuning.CreateJobRequest.{name}" for name in ("name", "method", "train")}
    | {"taskgate.tuning.AdapterRequest.name", "taskgate.tuning.RollbackAdapterRequest.name"}
)


def request_messages(method: pb_descriptor.MethodDescriptor) -> st.SearchStrategy[Message]:
    """Drawn messages of the method's request type; for generation and v2 inference, where a dozen
    drawn fields (and rules between them) almost always leave one out of range, a quarter of them
    is a plain request instead (texts and the model only) so that the models are reached too."""
    drawn = messages(method.input_type, steer=STEER, always=ALWAYS)
    if method.name in GENERATION:
        request_class = message_factory.GetMessageClass(method.input_type)
        plain = st.builds(lambda text: request_class(text=text), _SOME_TEXT)
    elif method.full_name == "inference.GRPCInferenceService.ModelInfer":
        plain = st.builds(
            _plain_infer, st.sampled_from(_INFER_MODELS), st.lists(_SOME_TEXT, min_size=1, max_size=3)
        )
    else:
        return drawn
    return st.one_of(drawn, drawn, drawn, plain)


def _plain_infer(model_name: str, texts: list[str]) -> Message:
    request = grpc_predict_v2_pb2.ModelInferRequest(model_name=model_name)
    name, texts = ("text_input", texts[:1]) if model_name == GENERATION_MODEL else ("text", texts)
    tensor = request.inputs.add(name=name, datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(text.encode("utf-8") for text in texts)
    return request


def request_metadata(method: pb_descriptor.MethodDescriptor) -> st.SearchStrategy[tuple[str, str | None]]:
    """(mm-model-id, x-request-id): the model that serves the method's task half of the time."""
    serving = {"TextClassificationTaskPredict": CLASSIFIER, **dict.fromkeys(GENERATION, GENERATION_MODEL)}
    model_ids = st.just(serving.get(method.name, MINILM)) | (
        st.sampled_from([*MODEL_IDS, "no-such-model", ""]) | st.text("abc-_.:/ ", max_size=20)
    )
    request_ids = st.none() | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
    return st.tuples(model_ids, request_ids)


def bounded(method: pb_descriptor.MethodDescriptor, message: Any) -> Any:
    if method.name in GENERATION:
        tokens = message.max_new_tokens if message.HasField("max_new_tokens") else None
        if tokens is None or tokens > MAX_NEW_TOKENS:
            message.max_new_tokens = MAX_NEW_TOKENS
    elif (
        method.full_name == "inference.GRPCInferenceService.ModelInfer"
        and message.model_name == GENERATION_MODEL
    ):
        # v2 generation: max_new_tokens (or Triton's max_tokens) as a request parameter
        drawn = [
            message.parameters[name]
            for name in ("max_new_tokens", "max_tokens")
            if name in message.parameters
        ]
        if not drawn:
            message.parameters["max_new_tokens"].int64_param = MAX_NEW_TOKENS
        for parameter in drawn:
            if (
                parameter.WhichOneof("parameter_choice") == "int64_param"
                and parameter.int64_param > MAX_NEW_TOKENS
            ):
                parameter.int64_param = MAX_NEW_TOKENS
    return message
