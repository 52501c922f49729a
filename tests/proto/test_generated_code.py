"""The checked-in gateway/wire/ code must be exactly what proto/generate.py builds from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_proto_files() -> None:
    check = subprocess.run(
        [sys.executable, "proto/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_caikit_names_are_on_the_wire() -> None:
    from gateway.wire import caikit_runtime_info_pb2, caikit_runtime_nlp_pb2

    service = caikit_runtime_nlp_pb2.DESCRIPTOR.services_by_name["NlpService"]
    assert service.full_name == "caikit.runtime.Nlp.NlpService"
    assert {
        "EmbeddingTaskPredict",
        "EmbeddingTasksPredict",
        "SentenceSimilarityTaskPredict",
        "SentenceSimilarityTasksPredict",
        "RerankTaskPredict",
        "RerankTasksPredict",
        "TokenizationTaskPredict",
        "TextClassificationTaskPredict",
        "TextGenerationTaskPredict",
        "ServerStreamingTextGenerationTaskPredict",
    } <= set(service.methods_by_name)
    info = caikit_runtime_info_pb2.DESCRIPTOR.services_by_name["InfoService"]
    assert info.full_name == "caikit.runtime.info.InfoService"


def test_caikit_training_names_are_on_the_wire() -> None:
    from gateway.wire import caikit_runtime_nlp_training_pb2, caikit_runtime_training_pb2

    train = caikit_runtime_nlp_training_pb2.DESCRIPTOR.services_by_name["NlpTrainingService"]
    rpc = train.methods_by_name["TextGenerationTaskPeftPromptTuningTrain"]
    assert train.full_name == "caikit.runtime.Nlp.NlpTrainingService"
    assert rpc.input_type.full_name == "caikit.runtime.Nlp.TextGenerationTaskPeftPromptTuningTrainRequest"
    assert rpc.output_type.full_name == "caikit_data_model.runtime.TrainingJob"
    management = caikit_runtime_training_pb2.DESCRIPTOR.services_by_name["TrainingManagement"]
    assert management.full_name == "caikit.runtime.training.TrainingManagement"
    assert set(management.methods_by_name) == {"GetTrainingStatus", "CancelTraining"}
    status = management.methods_by_name["GetTrainingStatus"].output_type
    assert status.full_name == "caikit_data_model.runtime.TrainingStatusResponse"
    assert [(f.name, f.number) for f in status.fields] == [
        ("training_id", 1),
        ("state", 2),
        ("submission_timestamp", 3),
        ("completion_timestamp", 4),
        ("reasons", 5),
    ]
    states = status.fields_by_name["state"].enum_type
    assert [(v.name, v.number) for v in states.values] == [
        ("PLACEHOLDER_UNSET", 0),
        ("QUEUED", 1),
        ("RUNNING", 2),
        ("COMPLETED", 3),
        ("CANCELED", 4),
        ("ERRORED", 5),
    ]
