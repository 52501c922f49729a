"""One-request smoke checks of the peers against Taskgate's embedding (cosine >= 0.999).

Each step runs with the interpreter that has its client libraries:

    .venv/bin/python bench/peers/smoke.py reference > /tmp/ref.json          # Taskgate OnnxEncoder
    bench/.venv-kserve/bin/python bench/peers/smoke.py kserve --ref /tmp/ref.json \
        --http-port 8090 --grpc-port 8091                                     # REST + gRPC (OIP v2)
    .venv/bin/python bench/peers/smoke.py caikit --ref /tmp/ref.json \
        --http-port 8095 --grpc-port 8096                                     # REST + gRPC (Caikit NLP)

The Caikit gRPC client uses Taskgate's generated Caikit stubs (gateway/wire), i.e. the same wire
contract Caikit clients use. One request per transport; no load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "all-MiniLM-L6-v2"
TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."
THRESHOLD = 0.999


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def reference() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from bench.stores import prepare_store, store_path
    from gateway.models.store import ModelStore
    from runtimes.base import ThreadSettings
    from runtimes.onnx_encoder import OnnxEncoder

    # the encoder benchmark's own store, whose export the KServe peer serves (bench/stores.py);
    # loading writes ONNX Runtime's optimized graph beside the export, so never ./model-store
    store = prepare_store(store_path("encoder_throughput"))
    manifest = ModelStore(store).manifest(MODEL)
    encoder = OnnxEncoder(
        source=manifest.source,
        work_dir=manifest.folder,
        options={},
        threads=ThreadSettings(intra_op_threads=1, inter_op_threads=1),
    )
    encoder.load()
    vector = encoder.run_batch(encoder.tokenize([TEXT], None))[0]
    json.dump({"text": TEXT, "embedding": [float(x) for x in vector]}, sys.stdout)


def check(name: str, got: list[float], ref: list[float]) -> bool:
    score = cosine(got, ref)
    ok = len(got) == len(ref) and score >= THRESHOLD
    print(f"{name}: dim={len(got)} cosine={score:.6f} {'OK' if ok else 'FAIL'}")
    return ok


def kserve_peer(args: argparse.Namespace, ref: list[float]) -> bool:
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}]}
    out = post_json(f"http://127.0.0.1:{args.http_port}/v2/models/{MODEL}/infer", body)
    tensor = out["outputs"][0]
    assert tensor["datatype"] == "FP32" and tensor["shape"] == [1, 384], tensor["shape"]
    ok = check("kserve REST", tensor["data"][:384], ref)
    if args.grpc_port:
        import grpc
        import numpy as np
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

        request = pb.ModelInferRequest(
            model_name=MODEL,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name="text",
                    datatype="BYTES",
                    shape=[1],
                    contents=pb.InferTensorContents(bytes_contents=[TEXT.encode()]),
                )
            ],
        )
        with grpc.insecure_channel(f"127.0.0.1:{args.grpc_port}") as channel:
            reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
        output = reply.outputs[0]
        assert output.datatype == "FP32" and list(output.shape) == [1, 384], output.shape
        if reply.raw_output_contents:
            vector = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").tolist()
        else:
            vector = list(output.contents.fp32_contents)
        ok = check("kserve gRPC", vector, ref) and ok
    return ok


def caikit_peer(args: argparse.Namespace, ref: list[float]) -> bool:
    out = post_json(
        f"http://127.0.0.1:{args.http_port}/api/v1/task/embedding", {"model_id": MODEL, "inputs": TEXT}
    )
    ok = check("caikit REST", out["result"]["data"]["values"], ref)
    if args.grpc_port:
        import grpc

        sys.path.insert(0, str(ROOT))
        from gateway.wire import caikit_runtime_nlp_pb2 as nlp
        from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

        with grpc.insecure_channel(f"127.0.0.1:{args.grpc_port}") as channel:
            reply = nlp_grpc.NlpServiceStub(channel).EmbeddingTaskPredict(
                nlp.EmbeddingTaskRequest(text=TEXT), metadata=(("mm-model-id", MODEL),), timeout=60
            )
        vector = _vector1d(reply.result)
        ok = check("caikit gRPC", vector, ref) and ok
    return ok


def _vector1d(message) -> list[float]:  # type: ignore[no-untyped-def]
    """caikit_data_model.common.Vector1D: oneof data {ListOfFloat32 data_npfloat32, ...}."""
    which = message.WhichOneof("data")
    return list(getattr(message, which).values)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("peer", choices=["reference", "kserve", "caikit"])
    parser.add_argument("--ref", type=Path)
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--grpc-port", type=int, default=0, help="0: skip gRPC")
    args = parser.parse_args()
    if args.peer == "reference":
        reference()
        return
    ref = json.loads(args.ref.read_text())["embedding"]
    ok = kserve_peer(args, ref) if args.peer == "kserve" else caikit_peer(args, ref)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
