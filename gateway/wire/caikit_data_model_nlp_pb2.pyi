from gateway.wire import caikit_data_model_common_pb2 as _caikit_data_model_common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOT_FINISHED: _ClassVar[FinishReason]
    MAX_TOKENS: _ClassVar[FinishReason]
    EOS_TOKEN: _ClassVar[FinishReason]
    CANCELLED: _ClassVar[FinishReason]
    TIME_LIMIT: _ClassVar[FinishReason]
    STOP_SEQUENCE: _ClassVar[FinishReason]
    TOKEN_LIMIT: _ClassVar[FinishReason]
    ERROR: _ClassVar[FinishReason]
NOT_FINISHED: FinishReason
MAX_TOKENS: FinishReason
EOS_TOKEN: FinishReason
CANCELLED: FinishReason
TIME_LIMIT: FinishReason
STOP_SEQUENCE: FinishReason
TOKEN_LIMIT: FinishReason
ERROR: FinishReason

class Token(_message.Message):
    __slots__ = ("start", "end", "text")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    text: str
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class TokenizationResults(_message.Message):
    __slots__ = ("results", "token_count")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Token]
    token_count: int
    def __init__(self, results: _Optional[_Iterable[_Union[Token, _Mapping]]] = ..., token_count: _Optional[int] = ...) -> None: ...

class TokenizationStreamResult(_message.Message):
    __slots__ = ("results", "token_count", "processed_index", "start_index")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_INDEX_FIELD_NUMBER: _ClassVar[int]
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Token]
    token_count: int
    processed_index: int
    start_index: int
    def __init__(self, results: _Optional[_Iterable[_Union[Token, _Mapping]]] = ..., token_count: _Optional[int] = ..., processed_index: _Optional[int] = ..., start_index: _Optional[int] = ...) -> None: ...

class ClassificationTrainRecord(_message.Message):
    __slots__ = ("text", "labels")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    text: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, text: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class ClassificationResult(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ClassificationResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ClassificationResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ClassificationResult, _Mapping]]] = ...) -> None: ...

class GeneratedToken(_message.Message):
    __slots__ = ("text", "logprob", "rank")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    text: str
    logprob: float
    rank: int
    def __init__(self, text: _Optional[str] = ..., logprob: _Optional[float] = ..., rank: _Optional[int] = ...) -> None: ...

class GeneratedTextResult(_message.Message):
    __slots__ = ("generated_text", "generated_tokens", "finish_reason", "producer_id", "input_token_count", "seed", "tokens", "input_tokens")
    GENERATED_TEXT_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    generated_text: str
    generated_tokens: int
    finish_reason: FinishReason
    producer_id: _caikit_data_model_common_pb2.ProducerId
    input_token_count: int
    seed: int
    tokens: _containers.RepeatedCompositeFieldContainer[GeneratedToken]
    input_tokens: _containers.RepeatedCompositeFieldContainer[GeneratedToken]
    def __init__(self, generated_text: _Optional[str] = ..., generated_tokens: _Optional[int] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., producer_id: _Optional[_Union[_caikit_data_model_common_pb2.ProducerId, _Mapping]] = ..., input_token_count: _Optional[int] = ..., seed: _Optional[int] = ..., tokens: _Optional[_Iterable[_Union[GeneratedToken, _Mapping]]] = ..., input_tokens: _Optional[_Iterable[_Union[GeneratedToken, _Mapping]]] = ...) -> None: ...

class TokenStreamDetails(_message.Message):
    __slots__ = ("finish_reason", "generated_tokens", "seed", "input_token_count")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    finish_reason: FinishReason
    generated_tokens: int
    seed: int
    input_token_count: int
    def __init__(self, finish_reason: _Optional[_Union[FinishReason, str]] = ..., generated_tokens: _Optional[int] = ..., seed: _Optional[int] = ..., input_token_count: _Optional[int] = ...) -> None: ...

class GeneratedTextStreamResult(_message.Message):
    __slots__ = ("generated_text", "tokens", "details", "producer_id", "input_tokens")
    GENERATED_TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    generated_text: str
    tokens: _containers.RepeatedCompositeFieldContainer[GeneratedToken]
    details: TokenStreamDetails
    producer_id: _caikit_data_model_common_pb2.ProducerId
    input_tokens: _containers.RepeatedCompositeFieldContainer[GeneratedToken]
    def __init__(self, generated_text: _Optional[str] = ..., tokens: _Optional[_Iterable[_Union[GeneratedToken, _Mapping]]] = ..., details: _Optional[_Union[TokenStreamDetails, _Mapping]] = ..., producer_id: _Optional[_Union[_caikit_data_model_common_pb2.ProducerId, _Mapping]] = ..., input_tokens: _Optional[_Iterable[_Union[GeneratedToken, _Mapping]]] = ...) -> None: ...
