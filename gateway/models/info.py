"""Runtime and model information shared by the gRPC InfoService and the HTTP /info routes."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from gateway import __version__
from gateway.models.registry import ModelRegistry, ModelStatus

_PACKAGES = ("taskgate", "onnxruntime", "transformers", "optimum", "tokenizers", "grpcio", "fastapi")


def runtime_info() -> dict[str, Any]:
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"runtime_version": __version__, "python_packages": packages}


def model_info(status: ModelStatus) -> dict[str, Any]:
    """A model's status in the shape of Caikit's ModelInfo (metadata is a JSON object)."""
    metadata: dict[str, Any] = {
        "state": status.state,
        "tasks": list(status.tasks),
        "hits": status.hits,
        "pinned": status.pinned,
    }
    if status.reason:
        metadata["reason"] = status.reason
    return {
        "model_path": status.folder,
        "name": status.model_id,
        "size": status.size_bytes or status.estimated_size_bytes,
        "loaded": status.state == "LOADED",
        "module_id": status.runtime,
        "metadata": metadata,
    }


async def models_info(registry: ModelRegistry) -> list[dict[str, Any]]:
    """One entry per model in the store, in the shape of Caikit's ModelInfo."""
    return [model_info(status) for status in await registry.status()]
