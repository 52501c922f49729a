from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLACEHOLDER_UNSET: _ClassVar[TrainingStatus]
    QUEUED: _ClassVar[TrainingStatus]
    RUNNING: _ClassVar[TrainingStatus]
    COMPLETED: _ClassVar[TrainingStatus]
    CANCELED: _ClassVar[TrainingStatus]
    ERRORED: _ClassVar[TrainingStatus]
PLACEHOLDER_UNSET: TrainingStatus
QUEUED: TrainingStatus
RUNNING: TrainingStatus
COMPLETED: TrainingStatus
CANCELED: TrainingStatus
ERRORED: TrainingStatus

class FileReference(_message.Message):
    __slots__ = ("filename",)
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    filename: str
    def __init__(self, filename: _Optional[str] = ...) -> None: ...

class ListOfFileReferences(_message.Message):
    __slots__ = ("files",)
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, files: _Optional[_Iterable[str]] = ...) -> None: ...

class Directory(_message.Message):
    __slots__ = ("dirname", "extension")
    DIRNAME_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_FIELD_NUMBER: _ClassVar[int]
    dirname: str
    extension: str
    def __init__(self, dirname: _Optional[str] = ..., extension: _Optional[str] = ...) -> None: ...

class S3Files(_message.Message):
    __slots__ = ("endpoint", "region", "bucket", "accessKey", "secretKey", "IAM_id", "IAM_api_key", "files")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    ACCESSKEY_FIELD_NUMBER: _ClassVar[int]
    SECRETKEY_FIELD_NUMBER: _ClassVar[int]
    IAM_ID_FIELD_NUMBER: _ClassVar[int]
    IAM_API_KEY_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    region: str
    bucket: str
    accessKey: str
    secretKey: str
    IAM_id: str
    IAM_api_key: str
    files: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, endpoint: _Optional[str] = ..., region: _Optional[str] = ..., bucket: _Optional[str] = ..., accessKey: _Optional[str] = ..., secretKey: _Optional[str] = ..., IAM_id: _Optional[str] = ..., IAM_api_key: _Optional[str] = ..., files: _Optional[_Iterable[str]] = ...) -> None: ...

class S3Path(_message.Message):
    __slots__ = ("endpoint", "region", "bucket", "accessKey", "secretKey", "IAM_id", "IAM_api_key", "path")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    ACCESSKEY_FIELD_NUMBER: _ClassVar[int]
    SECRETKEY_FIELD_NUMBER: _ClassVar[int]
    IAM_ID_FIELD_NUMBER: _ClassVar[int]
    IAM_API_KEY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    region: str
    bucket: str
    accessKey: str
    secretKey: str
    IAM_id: str
    IAM_api_key: str
    path: str
    def __init__(self, endpoint: _Optional[str] = ..., region: _Optional[str] = ..., bucket: _Optional[str] = ..., accessKey: _Optional[str] = ..., secretKey: _Optional[str] = ..., IAM_id: _Optional[str] = ..., IAM_api_key: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...
