from gateway.wire import caikit_data_model_runtime_training_pb2 as _caikit_data_model_runtime_training_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
