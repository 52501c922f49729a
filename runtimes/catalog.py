"""Runtime names used in model manifests, mapped to their engines (imported on demand)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

from runtimes.base import Runtime, ThreadSettings


class RuntimeFactory(Protocol):
    def __call__(
        self, *, source: Path, work_dir: Path, options: dict[str, Any], threads: ThreadSettings
    ) -> Runtime[Any, Any]: ...


# manifest "runtime" value -> "module:attribute" of its factory
RUNTIMES: dict[str, str] = {
    "onnx-encoder": "runtimes.onnx_encoder:OnnxEncoder",
    "onnx-causal-lm": "runtimes.onnx_generation:OnnxCausalLM",
    "onnx-genai-causal-lm": "runtimes.genai_generation:GenaiCausalLM",
    "torch-causal-lm": "runtimes.torch_generation:TorchCausalLM",
    "torch-classifier": "runtimes.torch_classifier:TorchClassifier",
    "kserve-v2": "runtimes.remote_v2:RemoteV2Encoder",  # an encoder served by a remote KServe v2 server
}
# Runtimes the gateway builds itself for models it derives (a tuned classifier from its adapter):
# a manifest in the store or a deploy cannot name them, since their settings hold paths.
DERIVED_ONLY = frozenset({"torch-classifier"})


def factory_for(name: str, *, derived: bool = False) -> RuntimeFactory:
    if name in DERIVED_ONLY and not derived:
        raise ValueError(
            f"runtime {name!r} serves tuned adapters the gateway publishes; a manifest cannot name it"
        )
    try:
        target = RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(sorted(RUNTIMES))}") from None
    module_name, attribute = target.split(":")
    factory: RuntimeFactory = getattr(importlib.import_module(module_name), attribute)
    return factory
