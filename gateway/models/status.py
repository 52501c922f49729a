"""What the registry shows of a model (ModelStatus) and what it reads of a model's files to show
it: its manifest or why it cannot be read, and its size estimated from its source files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ModelNotFound, TaskgateError
from gateway.models.store import ManifestError, ModelManifest, ModelStore

# per model: its manifest (or why it cannot be read; None: not in the store) and its size estimate
DiskView = dict[str, tuple[ModelManifest | str | None, int]]


@dataclass(frozen=True)
class ModelStatus:
    model_id: str
    state: str  # NOT_LOADED, LOADING, LOADED, FAILED
    tasks: tuple[str, ...]
    runtime: str
    source: str
    size_bytes: int
    estimated_size_bytes: int
    pinned: bool
    hits: int
    misses: int
    inflight: int
    last_used: float
    load_seconds: float
    reason: str = ""
    folder: str = ""  # the model's folder in the store (Caikit's model_path)


def unreadable_status(model_id: str, reason: str, folder: Path) -> ModelStatus:
    """A store folder whose manifest cannot be read (or is not there)."""
    return ModelStatus(model_id, "FAILED", (), "", "", 0, 0, False, 0, 0, 0, 0.0, 0.0, reason, str(folder))


def pinned_by_manifest(manifest: ModelManifest) -> bool:
    return bool(manifest.settings.get("pinned"))


def estimate_size(manifest: ModelManifest) -> int:
    """Bytes of the model's source files (what ModelMesh's predictModelSize does from disk)."""
    source = manifest.source
    if source.is_file():
        return source.stat().st_size
    if not source.is_dir():
        return 0
    return sum(p.stat().st_size for p in source.rglob("*") if p.is_file() and p.suffix != ".md")


def disk_view(store: ModelStore, known_sizes: dict[str, int], model_ids: list[str] | None) -> DiskView:
    """Per model (None: every model of the store): its manifest (or why it cannot be read;
    None: not in the store) and the size to show when it is not loaded (a measured size the
    registry remembers, else the estimate from files). Reads files: run it in a thread."""
    view: DiskView = {}
    for model_id in store.model_ids() if model_ids is None else model_ids:
        try:
            manifest = store.manifest(model_id)
        except ModelNotFound:
            view[model_id] = (None, 0)
            continue
        except (ManifestError, TaskgateError) as exc:
            view[model_id] = (str(exc), 0)
            continue
        view[model_id] = (manifest, known_sizes.get(model_id) or estimate_size(manifest))
    return view
