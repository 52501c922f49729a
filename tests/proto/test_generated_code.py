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
