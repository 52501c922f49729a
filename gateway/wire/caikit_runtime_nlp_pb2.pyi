from google.protobuf import struct_pb2 as _struct_pb2
from gateway.wire import caikit_data_model_nlp_pb2 as _caikit_data_model_nlp_pb2
from gateway.wire import caikit_data_model_caikit_nlp_pb2 as _caikit_data_model_caikit_nlp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbeddingTaskRequest(_message.Message):
    __slots__ = ("text", "truncate_input_tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: str
    truncate_input_tokens: int
    def __init__(self, text: _Optional[str] = ..., truncate_input_tokens: _Optional[int] = ...) -> None: ...

class EmbeddingTasksRequest(_message.Message):
    __slots__ = ("texts", "truncate_input_tokens")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    truncate_input_tokens: int
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., truncate_input_tokens: _Optional[int] = ...) -> None: ...

class SentenceSimilarityTaskRequest(_message.Message):
    __slots__ = ("source_sentence", "sentences", "truncate_input_tokens")
    SOURCE_SENTENCE_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    source_sentence: str
    sentences: _containers.RepeatedScalarFieldContainer[str]
    truncate_input_tokens: int
    def __init__(self, source_sentence: _Optional[str] = ..., sentences: _Optional[_Iterable[str]] = ..., truncate_input_tokens: _Optional[int] = ...) -> None: ...

class SentenceSimilarityTasksRequest(_message.Message):
    __slots__ = ("source_sentences", "sentences", "truncate_input_tokens")
    SOURCE_SENTENCES_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    source_sentences: _containers.RepeatedScalarFieldContainer[str]
    sentences: _containers.RepeatedScalarFieldContainer[str]
    truncate_input_tokens: int
    def __init__(self, source_sentences: _Optional[_Iterable[str]] = ..., sentences: _Optional[_Iterable[str]] = ..., truncate_input_tokens: _Optional[int] = ...) -> None: ...

class RerankTaskRequest(_message.Message):
    __slots__ = ("query", "documents", "top_n", "truncate_input_tokens", "return_documents", "return_query", "return_text")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_QUERY_FIELD_NUMBER: _ClassVar[int]
    RETURN_TEXT_FIELD_NUMBER: _ClassVar[int]
    query: str
    documents: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    top_n: int
    truncate_input_tokens: int
    return_documents: bool
    return_query: bool
    return_text: bool
    def __init__(self, query: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., top_n: _Optional[int] = ..., truncate_input_tokens: _Optional[int] = ..., return_documents: bool = ..., return_query: bool = ..., return_text: bool = ...) -> None: ...

class RerankTasksRequest(_message.Message):
    __slots__ = ("queries", "documents", "top_n", "truncate_input_tokens", "return_documents", "return_queries", "return_text")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_QUERIES_FIELD_NUMBER: _ClassVar[int]
    RETURN_TEXT_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedScalarFieldContainer[str]
    documents: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    top_n: int
    truncate_input_tokens: int
    return_documents: bool
    return_queries: bool
    return_text: bool
    def __init__(self, queries: _Optional[_Iterable[str]] = ..., documents: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., top_n: _Optional[int] = ..., truncate_input_tokens: _Optional[int] = ..., return_documents: bool = ..., return_queries: bool = ..., return_text: bool = ...) -> None: ...

class TokenizationTaskRequest(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class TextClassificationTaskRequest(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class TextGenerationTaskRequest(_message.Message):
    __slots__ = ("text", "max_new_tokens", "min_new_tokens", "truncate_input_tokens", "decoding_method", "top_k", "top_p", "typical_p", "temperature", "repetition_penalty", "max_time", "exponential_decay_length_penalty", "stop_sequences", "seed", "preserve_input_text", "input_tokens", "generated_tokens", "token_logprobs", "token_ranks", "include_stop_sequence")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MIN_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DECODING_METHOD_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TYPICAL_P_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    MAX_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPONENTIAL_DECAY_LENGTH_PENALTY_FIELD_NUMBER: _ClassVar[int]
    STOP_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_INPUT_TEXT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_RANKS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_STOP_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    text: str
    max_new_tokens: int
    min_new_tokens: int
    truncate_input_tokens: int
    decoding_method: str
    top_k: int
    top_p: float
    typical_p: float
    temperature: float
    repetition_penalty: float
    max_time: float
    exponential_decay_length_penalty: _caikit_data_model_caikit_nlp_pb2.ExponentialDecayLengthPenalty
    stop_sequences: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    preserve_input_text: bool
    input_tokens: bool
    generated_tokens: bool
    token_logprobs: bool
    token_ranks: bool
    include_stop_sequence: bool
    def __init__(self, text: _Optional[str] = ..., max_new_tokens: _Optional[int] = ..., min_new_tokens: _Optional[int] = ..., truncate_input_tokens: _Optional[int] = ..., decoding_method: _Optional[str] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., typical_p: _Optional[float] = ..., temperature: _Optional[float] = ..., repetition_penalty: _Optional[float] = ..., max_time: _Optional[float] = ..., exponential_decay_length_penalty: _Optional[_Union[_caikit_data_model_caikit_nlp_pb2.ExponentialDecayLengthPenalty, _Mapping]] = ..., stop_sequences: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., preserve_input_text: bool = ..., input_tokens: bool = ..., generated_tokens: bool = ..., token_logprobs: bool = ..., token_ranks: bool = ..., include_stop_sequence: bool = ...) -> None: ...

class ServerStreamingTextGenerationTaskRequest(_message.Message):
    __slots__ = ("text", "max_new_tokens", "min_new_tokens", "truncate_input_tokens", "decoding_method", "top_k", "top_p", "typical_p", "temperature", "repetition_penalty", "max_time", "exponential_decay_length_penalty", "stop_sequences", "seed", "preserve_input_text", "input_tokens", "generated_tokens", "token_logprobs", "token_ranks", "include_stop_sequence")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MIN_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DECODING_METHOD_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TYPICAL_P_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    MAX_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPONENTIAL_DECAY_LENGTH_PENALTY_FIELD_NUMBER: _ClassVar[int]
    STOP_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_INPUT_TEXT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_RANKS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_STOP_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    text: str
    max_new_tokens: int
    min_new_tokens: int
    truncate_input_tokens: int
    decoding_method: str
    top_k: int
    top_p: float
    typical_p: float
    temperature: float
    repetition_penalty: float
    max_time: float
    exponential_decay_length_penalty: _caikit_data_model_caikit_nlp_pb2.ExponentialDecayLengthPenalty
    stop_sequences: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    preserve_input_text: bool
    input_tokens: bool
    generated_tokens: bool
    token_logprobs: bool
    token_ranks: bool
    include_stop_sequence: bool
    def __init__(self, text: _Optional[str] = ..., max_new_tokens: _Optional[int] = ..., min_new_tokens: _Optional[int] = ..., truncate_input_tokens: _Optional[int] = ..., decoding_method: _Optional[str] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., typical_p: _Optional[float] = ..., temperature: _Optional[float] = ..., repetition_penalty: _Optional[float] = ..., max_time: _Optional[float] = ..., exponential_decay_length_penalty: _Optional[_Union[_caikit_data_model_caikit_nlp_pb2.ExponentialDecayLengthPenalty, _Mapping]] = ..., stop_sequences: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., preserve_input_text: bool = ..., input_tokens: bool = ..., generated_tokens: bool = ..., token_logprobs: bool = ..., token_ranks: bool = ..., include_stop_sequence: bool = ...) -> None: ...
