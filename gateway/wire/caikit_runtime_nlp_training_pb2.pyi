from gateway.wire import caikit_data_model_caikit_nlp_training_pb2 as _caikit_data_model_caikit_nlp_training_pb2
from gateway.wire import caikit_data_model_common_training_pb2 as _caikit_data_model_common_training_pb2
from gateway.wire import caikit_data_model_runtime_training_pb2 as _caikit_data_model_runtime_training_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataStreamSourceGenerationTrainRecord(_message.Message):
    __slots__ = ("jsondata", "file", "list_of_files", "directory", "s3files")
    JSONDATA_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    LIST_OF_FILES_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    S3FILES_FIELD_NUMBER: _ClassVar[int]
    jsondata: DataStreamSourceGenerationTrainRecordJsonData
    file: _caikit_data_model_common_training_pb2.FileReference
    list_of_files: _caikit_data_model_common_training_pb2.ListOfFileReferences
    directory: _caikit_data_model_common_training_pb2.Directory
    s3files: _caikit_data_model_common_training_pb2.S3Files
    def __init__(self, jsondata: _Optional[_Union[DataStreamSourceGenerationTrainRecordJsonData, _Mapping]] = ..., file: _Optional[_Union[_caikit_data_model_common_training_pb2.FileReference, _Mapping]] = ..., list_of_files: _Optional[_Union[_caikit_data_model_common_training_pb2.ListOfFileReferences, _Mapping]] = ..., directory: _Optional[_Union[_caikit_data_model_common_training_pb2.Directory, _Mapping]] = ..., s3files: _Optional[_Union[_caikit_data_model_common_training_pb2.S3Files, _Mapping]] = ...) -> None: ...

class DataStreamSourceGenerationTrainRecordJsonData(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[_caikit_data_model_caikit_nlp_training_pb2.GenerationTrainRecord]
    def __init__(self, data: _Optional[_Iterable[_Union[_caikit_data_model_caikit_nlp_training_pb2.GenerationTrainRecord, _Mapping]]] = ...) -> None: ...

class TextGenerationTaskPeftPromptTuningTrainParameters(_message.Message):
    __slots__ = ("base_model", "train_stream", "tuning_config", "val_stream", "device", "tuning_type", "num_epochs", "learning_rate", "verbalizer", "batch_size", "max_source_length", "max_target_length", "accumulate_steps", "torch_dtype", "silence_progress_bars", "seed")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    TRAIN_STREAM_FIELD_NUMBER: _ClassVar[int]
    TUNING_CONFIG_FIELD_NUMBER: _ClassVar[int]
    VAL_STREAM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TUNING_TYPE_FIELD_NUMBER: _ClassVar[int]
    NUM_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    VERBALIZER_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SOURCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_TARGET_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ACCUMULATE_STEPS_FIELD_NUMBER: _ClassVar[int]
    TORCH_DTYPE_FIELD_NUMBER: _ClassVar[int]
    SILENCE_PROGRESS_BARS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    train_stream: DataStreamSourceGenerationTrainRecord
    tuning_config: _caikit_data_model_caikit_nlp_training_pb2.TuningConfig
    val_stream: DataStreamSourceGenerationTrainRecord
    device: str
    tuning_type: str
    num_epochs: int
    learning_rate: float
    verbalizer: str
    batch_size: int
    max_source_length: int
    max_target_length: int
    accumulate_steps: int
    torch_dtype: str
    silence_progress_bars: bool
    seed: int
    def __init__(self, base_model: _Optional[str] = ..., train_stream: _Optional[_Union[DataStreamSourceGenerationTrainRecord, _Mapping]] = ..., tuning_config: _Optional[_Union[_caikit_data_model_caikit_nlp_training_pb2.TuningConfig, _Mapping]] = ..., val_stream: _Optional[_Union[DataStreamSourceGenerationTrainRecord, _Mapping]] = ..., device: _Optional[str] = ..., tuning_type: _Optional[str] = ..., num_epochs: _Optional[int] = ..., learning_rate: _Optional[float] = ..., verbalizer: _Optional[str] = ..., batch_size: _Optional[int] = ..., max_source_length: _Optional[int] = ..., max_target_length: _Optional[int] = ..., accumulate_steps: _Optional[int] = ..., torch_dtype: _Optional[str] = ..., silence_progress_bars: bool = ..., seed: _Optional[int] = ...) -> None: ...

class TextGenerationTaskPeftPromptTuningTrainRequest(_message.Message):
    __slots__ = ("model_name", "output_path", "parameters")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    output_path: _caikit_data_model_common_training_pb2.S3Path
    parameters: TextGenerationTaskPeftPromptTuningTrainParameters
    def __init__(self, model_name: _Optional[str] = ..., output_path: _Optional[_Union[_caikit_data_model_common_training_pb2.S3Path, _Mapping]] = ..., parameters: _Optional[_Union[TextGenerationTaskPeftPromptTuningTrainParameters, _Mapping]] = ...) -> None: ...
