"""Base models: a store entry or a folder becomes the Hugging Face folder to train on, with its kind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from adapters.base_models import (
    ModelKind,
    base_model_from_folder,
    base_model_from_manifest,
    folder_kind,
    manifest_kind,
    require_kind,
    resolve_base_model,
)
from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL, DEFAULT_GENERATION_MODEL
from gateway.models.store import ModelStore
from runtimes.gguf_convert import CONVERTED
from tests.models import CLASSIFIER, minilm_source


def test_store_models_and_their_kinds(store: Path) -> None:
    models = ModelStore(store)
    generation = models.manifest(DEFAULT_GENERATION_MODEL)
    assert generation.source.suffix == ".gguf"
    assert manifest_kind(generation) is ModelKind.CAUSAL_LM  # known without converting
    smollm = base_model_from_manifest(generation)
    assert smollm.kind is ModelKind.CAUSAL_LM and smollm.model_id == DEFAULT_GENERATION_MODEL
    assert smollm.folder == generation.folder / CONVERTED  # serving's own conversion cache
    assert (smollm.folder / "model.safetensors").is_file() and folder_kind(
        smollm.folder
    ) is ModelKind.CAUSAL_LM
    tokenizer = json.loads((smollm.folder / "special_tokens_map.json").read_text())
    assert tokenizer["eos_token"] == "<|im_end|>"  # the manifest's tokenizer fix, as serving has it

    minilm = base_model_from_manifest(models.manifest(DEFAULT_EMBEDDING_MODEL))
    assert minilm.kind is ModelKind.ENCODER and minilm.folder == minilm_source()
    classifier = base_model_from_manifest(models.manifest(CLASSIFIER))  # BertForSequenceClassification
    assert classifier.kind is ModelKind.ENCODER and classifier.model_id == CLASSIFIER


def test_resolve_by_store_id_or_path(store: Path) -> None:
    by_id = resolve_base_model(DEFAULT_EMBEDDING_MODEL, model_store=store)
    by_store_folder = resolve_base_model(str(store / DEFAULT_EMBEDDING_MODEL))
    by_hf_folder = resolve_base_model("model", relative_to=minilm_source().parent)
    assert by_id == by_store_folder and by_id.model_id == DEFAULT_EMBEDDING_MODEL
    assert by_hf_folder.folder == minilm_source() and by_hf_folder.kind is ModelKind.ENCODER
    with pytest.raises(
        ValueError, match=r"base model 'nope' is neither a model folder .* nor a model in the store"
    ):
        resolve_base_model("nope", model_store=store)
    with pytest.raises(ValueError, match="base_model must name a model store id or a model folder"):
        resolve_base_model("")


def test_the_wrong_kind_is_refused_by_name() -> None:
    require_kind(ModelKind.ENCODER, ModelKind.ENCODER, method="classifier", model_id="m")
    with pytest.raises(
        ValueError, match="method 'lora' tunes a causal language model; base model 'm' is an encoder"
    ):
        require_kind(ModelKind.ENCODER, ModelKind.CAUSAL_LM, method="lora", model_id="m")
    with pytest.raises(ValueError, match="method 'classifier' tunes an encoder; base model 'g' is a causal"):
        require_kind(ModelKind.CAUSAL_LM, ModelKind.ENCODER, method="classifier", model_id="g")


def test_folders_that_cannot_be_trained_on(tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(minilm_source() / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(
        ValueError, match=r"holds no \.safetensors weights \(pickle checkpoints such as \.bin"
    ):
        base_model_from_folder(pickled)
    with pytest.raises(ValueError, match="is not a Hugging Face model folder"):
        base_model_from_folder(tmp_path / "empty")
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(
        json.dumps({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]})
    )
    with pytest.raises(ValueError, match="model type 't5' is neither a known encoder nor a causal LM"):
        folder_kind(odd)
