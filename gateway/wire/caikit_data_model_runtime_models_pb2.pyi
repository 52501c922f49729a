from gateway.wire import caikit_data_model_common_file_pb2 as _caikit_data_model_common_file_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeployModelRequest(_message.Message):
    __slots__ = ("model_id", "model_files")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FILES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_files: _containers.RepeatedCompositeFieldContainer[_caikit_data_model_common_file_pb2.File]
    def __init__(self, model_id: _Optional[str] = ..., model_files: _Optional[_Iterable[_Union[_caikit_data_model_common_file_pb2.File, _Mapping]]] = ...) -> None: ...

class UndeployModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...
