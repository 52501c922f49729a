"""Runtime and model information shared by the gRPC InfoService and the HTTP /info routes."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from gateway import __version__
from gateway.registry import ModelRegistry

_PACKAGES = ("taskgate", "onnxruntime", "transformers", "optimum", "tokenizers", "grpcio", "fastapi")


def runtime_info() -> dict[str, Any]:
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"runtime_version": __version__, "python_packages": packages}


def models_info(registry: ModelRegistry) -> list[dict[str, Any]]:
    """One entry per model in the store, in the shape of Caikit's ModelInfo."""
    return [
        {
            "model_path": status.source,
            "name": status.model_id,
            "size": status.size_bytes,
            "loaded": status.state == "LOADED",
            "module_id": status.runtime,
            "metadata": {
                "state": status.state,
                "tasks": ",".join(status.tasks),
                "hits": str(status.hits),
                **({"reason": status.reason} if status.reason else {}),
            },
        }
        for status in registry.status()
    ]
