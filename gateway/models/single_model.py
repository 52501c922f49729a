"""Single-model mode: serve the one model KServe's storage initializer put at ``/mnt/models``.

    taskgate serve --model-dir /mnt/models --model-name minilm
    (env TASKGATE_MODEL_DIR, TASKGATE_MODEL_NAME; the name defaults to INFERENCE_SERVICE_NAME,
    which KServe >= 0.17 sets in a predictor; a ServingRuntime may also pass {{.Name}})

The folder holds one model's files, as uploaded to the InferenceService's ``storageUri``:

- a bare Hugging Face folder: an encoder serves embedding, sentence similarity, rerank and
  tokenization (text classification with a ``*ForSequenceClassification`` head) on
  ``onnx-encoder``; a causal LM serves text generation on ``onnx-causal-lm``;
- a ``.gguf`` file (alone in the folder, or the folder itself): text generation, converted once;
- a Taskgate model folder: its ``manifest.json`` (its ``source`` relative to the folder and inside
  it; its ``id`` is replaced by the model name). Exports shipped beside it (``onnx-<task>/``,
  ``hf-from-gguf/``, as the gateway writes them) are used while their fingerprint matches the
  source, so a pod need not export again.

The kind is read from the files as ModelMesh's ``loadModel`` reads it (gateway/management.py).
Nothing is written into the folder, which a pod mounts read-only: the manifest goes into the
model store's entry ``<store>/<name>/``, and every export or conversion is cached there, as for
any store model (the store is the writable cache: an emptyDir in a pod, kept across container
restarts). ``settings`` (``--model-settings``, JSON) add runtime settings to the manifest, e.g.
``{"eos_token": "<|im_end|>"}`` for a GGUF chat model whose file names the wrong EOS token.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from gateway.errors import TaskgateError
from gateway.models.management import infer_manifest
from gateway.models.model_settings import check_settings
from gateway.models.store import (
    MANIFEST,
    ManifestError,
    ModelManifest,
    ModelStore,
    is_within,
    read_manifest_data,
)
from gateway.settings import SingleModelSettings
from runtimes.cached_folder import FINGERPRINT
from runtimes.catalog import factory_for
from runtimes.gguf_convert import CONVERTED

log = logging.getLogger(__name__)


class SingleModelError(ValueError):
    """The model folder cannot be served; the message says what is wrong and what to do."""


def install_single_model(store: ModelStore, model: SingleModelSettings) -> ModelManifest:
    """Write the store entry that serves ``model.model_dir`` as ``model.name`` (at start-up)."""
    manifest = single_model_manifest(store, model)
    try:
        manifest.write()  # replaces the entry a previous start wrote; its caches stay
    except OSError as exc:
        raise SingleModelError(
            f"cannot write {manifest.folder / MANIFEST}: {exc}; the model store (TASKGATE_MODEL_STORE) "
            "must be writable (in a pod: an emptyDir)"
        ) from None
    source_dir = model.model_dir.absolute()
    if source_dir.is_dir():
        _link_shipped_caches(source_dir, manifest.folder)
    log.info(
        "single-model mode: serving %s as %r (%s, runtime %s)",
        source_dir,
        manifest.model_id,
        ", ".join(sorted(task.value for task in manifest.tasks)),
        manifest.runtime,
    )
    return manifest


def single_model_manifest(store: ModelStore, model: SingleModelSettings) -> ModelManifest:
    """The manifest serving the folder (or .gguf file) ``model.model_dir``; nothing is written."""
    source = model.model_dir.absolute()
    folder = store.folder(model.name)
    if not source.exists():
        raise SingleModelError(
            f"{source} does not exist: KServe's storage initializer puts the InferenceService's "
            "storageUri there; check the storageUri (or TASKGATE_MODEL_DIR)"
        )
    if source.is_dir() and (source / MANIFEST).is_file():
        manifest = _from_taskgate_folder(source, folder, model.name)
    else:
        if source.is_file() and source.suffix != ".gguf":
            raise SingleModelError(f"{source} is a file but not a .gguf file; give a model folder")
        ggufs = sorted(source.glob("*.gguf")) if source.is_dir() else []
        if len(ggufs) > 1:
            names = ", ".join(p.name for p in ggufs)
            raise SingleModelError(f"{source} holds {len(ggufs)} .gguf files ({names}); serve one")
        try:
            manifest = infer_manifest(model.name, folder, source)
        except TaskgateError as exc:
            raise SingleModelError(str(exc)) from None
    settings = {**manifest.settings, **model.settings}
    try:
        check_settings(manifest.runtime, settings)
    except TaskgateError as exc:
        raise SingleModelError(f"model settings for {model.name!r}: {exc}") from None
    return dataclasses.replace(manifest, settings=settings)


def _from_taskgate_folder(source: Path, folder: Path, name: str) -> ModelManifest:
    path = source / MANIFEST
    try:
        data = read_manifest_data(source)
    except ManifestError as exc:
        raise SingleModelError(str(exc)) from None
    data.pop("id", None)  # the InferenceService names the model
    try:
        manifest = ModelManifest.parse(data, source, name)
        factory_for(manifest.runtime)  # a known runtime a manifest may name
    except (ManifestError, ValueError) as exc:
        raise SingleModelError(str(exc)) from None
    if not is_within(manifest.source, source):
        raise SingleModelError(
            f"{path}: source {data.get('source')!r} lies outside {source}; ship the model's files "
            "in the folder and name them by a relative path"
        )
    return dataclasses.replace(manifest, folder=folder)


def _link_shipped_caches(source: Path, folder: Path) -> None:
    """Link exports shipped in the model folder into the store entry; the runtime still checks
    their fingerprint and exports again (into the entry) when they do not match."""
    for shipped in sorted(source.iterdir()):
        if not (shipped.name.startswith("onnx-") or shipped.name == CONVERTED):
            continue
        if not (shipped.is_dir() and (shipped / FINGERPRINT).is_file()):
            continue
        target = folder / shipped.name
        if target.is_symlink() and not target.exists():
            target.unlink()  # a link a previous start made to a folder that is gone
        if not target.exists():
            target.symlink_to(shipped, target_is_directory=True)
            log.info("using the export shipped in %s", shipped)
