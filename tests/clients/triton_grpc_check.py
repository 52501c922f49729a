"""Drive tritonclient's gRPC client against a running Taskgate and print a JSON report.

tritonclient.grpc and kserve both register the ``inference.*`` protobuf symbols, so they cannot be
imported in one process; the gateway imports kserve's, so this runs in a process of its own and
imports nothing from this repository:

    python triton_grpc_check.py 127.0.0.1:8085 all-MiniLM-L6-v2 minilm-classifier
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

TEXTS = ["the cat sat on the mat", "markets fell sharply today"]


def _bytes_input(name: str, texts: list[str]) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_))  # raw_input_contents on the wire
    return tensor


def exercise(address: str, embedder: str, classifier: str) -> dict[str, Any]:
    client = triton_grpc.InferenceServerClient(url=address)
    try:
        metadata = client.get_model_metadata(embedder, as_json=True)
        embedded = client.infer(embedder, [_bytes_input("text", TEXTS)])
        classified = client.infer(
            classifier, [_bytes_input("text", TEXTS)], outputs=[triton_grpc.InferRequestedOutput("label")]
        )
        errors = {}
        for case, call in {
            "unknown-model": lambda: client.infer("no-such-model", [_bytes_input("text", TEXTS)]),
            "wrong-input": lambda: client.infer(embedder, [_bytes_input("txt", TEXTS)]),
        }.items():
            try:
                call()
                errors[case] = {"status": "OK"}
            except InferenceServerException as exc:
                errors[case] = {"status": exc.status(), "message": exc.message()}
        return {
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready(embedder),
            "server": client.get_server_metadata(as_json=True),
            "outputs": metadata["outputs"],
            "embedding": embedded.as_numpy("embedding").tolist(),
            "labels": [label.decode() for label in classified.as_numpy("label").tolist()],
            "errors": errors,
        }
    finally:
        client.close()


def main(argv: list[str]) -> int:
    address, embedder, classifier = argv[1:4]
    print(json.dumps({"texts": TEXTS, **exercise(address, embedder, classifier)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
