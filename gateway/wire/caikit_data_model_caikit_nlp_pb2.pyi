from google.protobuf import struct_pb2 as _struct_pb2
from gateway.wire import caikit_data_model_common_pb2 as _caikit_data_model_common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbeddingResult(_message.Message):
    __slots__ = ("result", "producer_id", "input_token_count")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    result: _caikit_data_model_common_pb2.Vector1D
    producer_id: _caikit_data_model_common_pb2.ProducerId
    input_token_count: int
    def __init__(self, result: _Optional[_Union[_caikit_data_model_common_pb2.Vector1D, _Mapping]] = ..., producer_id: _Optional[_Union[_caikit_data_model_common_pb2.ProducerId, _Mapping]] = ..., input_token_count: _Optional[int] = ...) -> None: ...

class EmbeddingResults(_message.Message):
    __slots__ = ("results", "producer_id", "input_token_count")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    results: _caikit_data_model_common_pb2.ListOfVector1D
    producer_id: _caikit_data_model_common_pb2.ProducerId
    input_token_count: int
    def __init__(self, results: _Optional[_Union[_caikit_data_model_common_pb2.ListOfVector1D, _Mapping]] = ..., producer_id: _Optional[_Union[_caikit_data_model_common_pb2.ProducerId, _Mapping]] = ..., input_token_count: _Optional[int] = ...) -> None: ...

class SentenceSimilarityScores(_message.Message):
    __slots__ = ("scores",)
    SCORES_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, scores: _Optional[_Iterable[float]] = ...) -> None: ...

class SentenceSimilarityResult(_message.Message):
    __slots__ = ("result", "producer_id", "input_token_count")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    result: SentenceSimilarityScores
    producer_id: _caikit_data_model_common_pb2.ProducerId
    input_token_count: int
    def __init__(self, result: _Optional[_Union[SentenceSimilarityScores, _Mapping]] = ..., producer_id: _Optional[_Union[_caikit_data_model_common_pb2.ProducerId, _Mapping]] = ..., input_token_count: _Optional[int] = ...) -> None: ...

class SentenceSimilarityResults(_message.Message):
    __slots__ = ("results", "producer_id", "input_token_count")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SentenceSimilarityScores]
    producer_id: _caikit_data_model_common_pb2.ProducerId
    input_token_count: int
    def __init__(self, results: _Optional[_Iterable[_Union[SentenceSimilarityScores, _Mapping]]] = ..., producer_id: _Optional[_Union[_caikit_data_model_common_pb2.ProducerId, _Mapping]] = ..., input_token_count: _Optional[int] = ...) -> None: ...

class RerankScore(_message.Message):
    __slots__ = ("document", "index", "score", "text")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    document: _struct_pb2.Struct
    index: int
    score: float
    text: str
    def __init__(self, document: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., index: _Optional[int] = ..., score: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class RerankScores(_message.Message):
    __slots__ = ("query", "scores")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    query: str
    scores: _containers.RepeatedCompositeFieldContainer[RerankScore]
    def __init__(self, query: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[RerankScore, _Mapping]]] = ...) -> None: ...

class RerankResult(_message.Message):
    __slots__ = ("result", "producer_id", "input_token_count")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    result: RerankScores
    producer_id: _caikit_data_model_common_pb2.ProducerId
    input_token_count: int
    def __init__(self, result: _Optional[_Union[RerankScores, _Mapping]] = ..., producer_id: _Optional[_Union[_caikit_data_model_common_pb2.ProducerId, _Mapping]] = ..., input_token_count: _Optional[int] = ...) -> None: ...

class RerankResults(_message.Message):
    __slots__ = ("results", "producer_id", "input_token_count")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RerankScores]
    producer_id: _caikit_data_model_common_pb2.ProducerId
    input_token_count: int
    def __init__(self, results: _Optional[_Iterable[_Union[RerankScores, _Mapping]]] = ..., producer_id: _Optional[_Union[_caikit_data_model_common_pb2.ProducerId, _Mapping]] = ..., input_token_count: _Optional[int] = ...) -> None: ...

class ExponentialDecayLengthPenalty(_message.Message):
    __slots__ = ("start_index", "decay_factor")
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    DECAY_FACTOR_FIELD_NUMBER: _ClassVar[int]
    start_index: int
    decay_factor: float
    def __init__(self, start_index: _Optional[int] = ..., decay_factor: _Optional[float] = ...) -> None: ...
