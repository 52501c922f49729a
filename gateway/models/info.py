"""Runtime and model information shared by the gRPC InfoService and the HTTP /info routes."""

from __future__ import annotations

import asyncio
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.models.registry import ModelRegistry, ModelStatus
from gateway.models.store import ManifestError, read_manifest_data
from runtimes import genai_graph, quantize

_PACKAGES = ("taskgate", "onnxruntime", "transformers", "optimum", "tokenizers", "grpcio", "fastapi")


def runtime_info() -> dict[str, Any]:
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"runtime_version": __version__, "python_packages": packages}


def model_info(status: ModelStatus, quantization: dict[str, Any] | None = None) -> dict[str, Any]:
    """A model's status in the shape of Caikit's ModelInfo (metadata is a JSON object), with the
    quantized variant it asks for and that variant's measured figures when there is one."""
    metadata: dict[str, Any] = {
        "state": status.state,
        "tasks": list(status.tasks),
        "hits": status.hits,
        "pinned": status.pinned,
    }
    if status.reason:
        metadata["reason"] = status.reason
    if quantization:
        metadata["quantization"] = quantization
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
    statuses = await registry.status()
    quantized = await asyncio.to_thread(lambda: [quantization_info(Path(s.folder)) for s in statuses])
    return [model_info(status, q) for status, q in zip(statuses, quantized, strict=True)]


def quantization_info(folder: Path) -> dict[str, Any] | None:
    """``{"kind": "int8", "report": {...}}`` for a model whose manifest asks for a quantized
    variant (the report is null until the variant is made); None for fp32 models."""
    try:
        data = read_manifest_data(folder)
    except ManifestError:
        return None
    settings = data.get("settings")
    if data.get("runtime") == genai_graph.RUNTIME:  # ORT GenAI's graph: auto unless "precision" says
        chosen = settings.get(genai_graph.PRECISION_SETTING) if isinstance(settings, dict) else None
        asked = chosen or genai_graph.DEFAULT_PRECISION
        if asked not in genai_graph.PRECISIONS:
            return None
        precision = genai_graph.chosen_precision(folder, asked)
        if precision is None:  # auto, before its graph is built: the report is null until then
            return {"kind": asked, "report": None}
        if not genai_graph.is_quantized(precision):
            return None
        return {"kind": precision, "report": genai_graph.graph_report(folder, precision)}
    kind = settings.get(quantize.SETTING) if isinstance(settings, dict) else None
    if kind not in {choice for choices in quantize.CHOICES.values() for choice in choices}:
        return None
    return {"kind": kind, "report": quantize.variant_report(folder, kind)}
