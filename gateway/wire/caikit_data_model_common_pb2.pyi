from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProducerId(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class PyFloatSequence(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class NpFloat32Sequence(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class NpFloat64Sequence(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Vector1D(_message.Message):
    __slots__ = ("data_pyfloatsequence", "data_npfloat32sequence", "data_npfloat64sequence")
    DATA_PYFLOATSEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DATA_NPFLOAT32SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DATA_NPFLOAT64SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    data_pyfloatsequence: PyFloatSequence
    data_npfloat32sequence: NpFloat32Sequence
    data_npfloat64sequence: NpFloat64Sequence
    def __init__(self, data_pyfloatsequence: _Optional[_Union[PyFloatSequence, _Mapping]] = ..., data_npfloat32sequence: _Optional[_Union[NpFloat32Sequence, _Mapping]] = ..., data_npfloat64sequence: _Optional[_Union[NpFloat64Sequence, _Mapping]] = ...) -> None: ...

class ListOfVector1D(_message.Message):
    __slots__ = ("vectors",)
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[Vector1D]
    def __init__(self, vectors: _Optional[_Iterable[_Union[Vector1D, _Mapping]]] = ...) -> None: ...
