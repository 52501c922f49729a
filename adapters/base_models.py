"""The base model a tuning job trains on: a Hugging Face folder and its kind.

A model store entry (``gateway.models.store.ModelManifest``) names its weights as a Hugging Face folder
or a GGUF file; a GGUF file is converted once by ``runtimes.gguf_convert`` into the model's own
folder (the same cache serving uses, with the manifest's tokenizer fixes), so training and
serving read the same weights and tokenizer. The kind (causal LM or encoder) comes from the
folder's ``config.json``; a method given a base of the wrong kind is a ValueError saying so.
Weights load from safetensors only (a folder with only pickle checkpoints is refused).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path

from gateway.models.store import ModelManifest


class ModelKind(enum.Enum):
    CAUSAL_LM = "causal language model"
    ENCODER = "encoder"


# model types of encoder-only families (BERT and its relatives); causal LMs are recognised by their
# *ForCausalLM architecture (config.json's "architectures", which save_pretrained always writes)
_ENCODER_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2",
     "mpnet", "camembert", "modernbert", "nomic_bert"}
)  # fmt: skip
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass(frozen=True)
class BaseModel:
    model_id: str  # for the record (the adapter's manifest names it)
    folder: Path  # a Hugging Face folder: config.json, safetensors weights, tokenizer
    kind: ModelKind


def folder_kind(folder: Path) -> ModelKind:
    """The kind of the model in a Hugging Face folder, from its ``config.json``."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{folder} is not a Hugging Face model folder (cannot read config.json: {exc})"
        ) from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a JSON object")
    architectures = config.get("architectures") or []
    model_type = str(config.get("model_type", ""))
    if any(str(name).endswith(_CAUSAL_SUFFIXES) for name in architectures):
        return ModelKind.CAUSAL_LM
    if model_type in _ENCODER_TYPES:
        return ModelKind.ENCODER
    raise ValueError(
        f"{folder}: model type {model_type!r} is neither a known encoder nor a causal LM "
        "(config.json names no *ForCausalLM architecture)"
    )


def _check_weights(folder: Path) -> None:
    if not any(folder.glob("*.safetensors")):
        raise ValueError(
            f"{folder} holds no .safetensors weights (pickle checkpoints such as .bin are never loaded)"
        )


def base_model_from_folder(folder: Path, model_id: str | None = None) -> BaseModel:
    """A Hugging Face folder as a base model (its id defaults to the folder's name)."""
    kind = folder_kind(folder)
    _check_weights(folder)
    return BaseModel(model_id=model_id or folder.name, folder=folder, kind=kind)


def _is_gguf(source: Path) -> bool:
    return source.suffix == ".gguf"


def manifest_kind(manifest: ModelManifest) -> ModelKind:
    """The kind of a store model without converting anything (cheap: for checking a request)."""
    if _is_gguf(manifest.source):
        return ModelKind.CAUSAL_LM
    return folder_kind(manifest.source)


def base_model_from_manifest(manifest: ModelManifest) -> BaseModel:
    """The folder to train on for a store model (converting its GGUF file once when needed)."""
    if _is_gguf(manifest.source):
        from runtimes.gguf_convert import TokenizerFixes, convert_cached

        fixes = TokenizerFixes.from_options(manifest.settings)
        folder = convert_cached(manifest.source, manifest.folder, fixes)
        return BaseModel(model_id=manifest.model_id, folder=folder, kind=ModelKind.CAUSAL_LM)
    if not manifest.source.is_dir():
        raise ValueError(
            f"model {manifest.model_id!r}: its source {manifest.source} is not a Hugging Face folder"
        )
    return base_model_from_folder(manifest.source, manifest.model_id)


def _with_article(kind: ModelKind) -> str:
    return f"an {kind.value}" if kind is ModelKind.ENCODER else f"a {kind.value}"


def require_kind(kind: ModelKind, needed: ModelKind, *, method: str, model_id: str) -> None:
    """A ValueError when ``method`` (which tunes ``needed``) is given a base of another kind."""
    if kind is not needed:
        wanted, given = _with_article(needed), _with_article(kind)
        raise ValueError(f"method {method!r} tunes {wanted}; base model {model_id!r} is {given}")


def resolve_base_model(
    reference: str, *, model_store: Path | None = None, relative_to: Path | None = None
) -> BaseModel:
    """A base model named by a model store id (when ``model_store`` is given and holds it), or by a
    path (relative to ``relative_to``) to a model store folder (with a manifest.json) or to a
    Hugging Face folder."""
    from gateway.models.store import MANIFEST, ModelStore, is_model_id

    if not isinstance(reference, str) or not reference:
        raise ValueError("base_model must name a model store id or a model folder")
    if model_store is not None and is_model_id(reference):
        store = ModelStore(model_store)
        if (store.folder(reference) / MANIFEST).is_file():
            return base_model_from_manifest(store.manifest(reference))
    path = Path(reference)
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    if (path / MANIFEST).is_file():
        return base_model_from_manifest(ModelManifest.read(path))
    if (path / "config.json").is_file():
        return base_model_from_folder(path)
    where = f" nor a model in the store {model_store}" if model_store is not None else ""
    raise ValueError(
        f"base model {reference!r} is neither a model folder (manifest.json or config.json){where}"
    )
