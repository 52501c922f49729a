from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    NOT_LOADED: _ClassVar[ModelState]
    LOADING: _ClassVar[ModelState]
    LOADED: _ClassVar[ModelState]
    FAILED: _ClassVar[ModelState]
    UNLOADING: _ClassVar[ModelState]
MODEL_STATE_UNSPECIFIED: ModelState
NOT_LOADED: ModelState
LOADING: ModelState
LOADED: ModelState
FAILED: ModelState
UNLOADING: ModelState

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class PinRequest(_message.Message):
    __slots__ = ("model_id", "pinned")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    pinned: bool
    def __init__(self, model_id: _Optional[str] = ..., pinned: bool = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("model_id", "state", "tasks", "runtime", "source", "size_bytes", "estimated_size_bytes", "pinned", "hits", "misses", "last_used_unix_s", "load_seconds", "failure_reason", "inflight")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    state: ModelState
    tasks: _containers.RepeatedScalarFieldContainer[str]
    runtime: str
    source: str
    size_bytes: int
    estimated_size_bytes: int
    pinned: bool
    hits: int
    misses: int
    last_used_unix_s: float
    load_seconds: float
    failure_reason: str
    inflight: int
    def __init__(self, model_id: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., tasks: _Optional[_Iterable[str]] = ..., runtime: _Optional[str] = ..., source: _Optional[str] = ..., size_bytes: _Optional[int] = ..., estimated_size_bytes: _Optional[int] = ..., pinned: bool = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., last_used_unix_s: _Optional[float] = ..., load_seconds: _Optional[float] = ..., failure_reason: _Optional[str] = ..., inflight: _Optional[int] = ...) -> None: ...

class BatchingSettings(_message.Message):
    __slots__ = ("max_batch_size", "max_queue_delay_ms", "max_queue_rows", "persisted")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_ROWS_FIELD_NUMBER: _ClassVar[int]
    PERSISTED_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_queue_delay_ms: float
    max_queue_rows: int
    persisted: bool
    def __init__(self, max_batch_size: _Optional[int] = ..., max_queue_delay_ms: _Optional[float] = ..., max_queue_rows: _Optional[int] = ..., persisted: bool = ...) -> None: ...

class UpdateBatchingRequest(_message.Message):
    __slots__ = ("model_id", "max_batch_size", "max_queue_delay_ms", "max_queue_rows", "persist")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_ROWS_FIELD_NUMBER: _ClassVar[int]
    PERSIST_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    max_batch_size: int
    max_queue_delay_ms: float
    max_queue_rows: int
    persist: bool
    def __init__(self, model_id: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., max_queue_delay_ms: _Optional[float] = ..., max_queue_rows: _Optional[int] = ..., persist: bool = ...) -> None: ...
