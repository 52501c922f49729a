"""Drive the real caikit-nlp-client against a running Taskgate and print a JSON report.

Runs inside its own venv (the client pins old grpcio-reflection and requests), so it imports
nothing from this repository. Every call is recorded separately, so one failure (with its
traceback) does not hide the others:

    python caikit_nlp_client_check.py --grpc-host 127.0.0.1 --grpc-port 8085 \
        --http-url http://127.0.0.1:8080 --model-id SmolLM2-135M-Instruct --prompt "Say hi"
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

MAX_NEW_TOKENS = 16
UNKNOWN_MODEL = "no-such-model"
SAMPLING = {"decoding_method": "SAMPLING", "seed": 42, "temperature": 0.9, "top_k": 50}


def attempt(call: Callable[[], Any]) -> dict[str, Any]:
    """``{"value": ...}`` or ``{"error": "Type: message", "traceback": ...}``."""
    try:
        return {"value": call()}
    except Exception as exc:  # report everything, including the client's own asserts
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def exercise(client: Any, model_id: str, prompt: str) -> dict[str, Any]:
    greedy = {"max_new_tokens": MAX_NEW_TOKENS}
    sampled = {"max_new_tokens": MAX_NEW_TOKENS, **SAMPLING}
    return {
        "greedy": attempt(lambda: client.generate_text(model_id, prompt, **greedy)),
        "stream": attempt(lambda: list(client.generate_text_stream(model_id, prompt, **greedy))),
        "sampled": [attempt(lambda: client.generate_text(model_id, prompt, **sampled)) for _ in range(2)],
        # the client turns a server error into RuntimeError(<the server's message>)
        "unknown_model": attempt(lambda: client.generate_text(UNKNOWN_MODEL, prompt, **greedy)),
        "unknown_model_stream": attempt(
            lambda: list(client.generate_text_stream(UNKNOWN_MODEL, prompt, **greedy))
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grpc-host", required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-url", required=True)
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--prompt", required=True)
    args = parser.parse_args()

    from caikit_nlp_client import GrpcClient, HttpClient

    report: dict[str, Any] = {
        "versions": {
            dist.metadata["Name"].lower(): dist.version for dist in importlib.metadata.distributions()
        },
        "sampling": SAMPLING,
        "max_new_tokens": MAX_NEW_TOKENS,
        "unknown_model": UNKNOWN_MODEL,
    }
    # The gRPC client resolves its request/response types through server reflection in __init__.
    grpc_client = attempt(lambda: GrpcClient(args.grpc_host, args.grpc_port, insecure=True))
    if "error" in grpc_client:
        report["grpc"] = {"connect": grpc_client}
    else:
        client = grpc_client["value"]
        with client:
            report["grpc"] = exercise(client, args.model_id, args.prompt)
            report["grpc"]["parameters"] = attempt(client.get_text_generation_parameters)
    http_client = HttpClient(args.http_url)
    report["http"] = exercise(http_client, args.model_id, args.prompt)
    report["http"]["parameters"] = attempt(http_client.get_text_generation_parameters)
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
