"""The multiplex benchmark's models: N small random BERT encoders with MiniLM's tokenizer.

Built once under bench/.multiplex/ (sources/ holds the HF folders, store/ the model store) and
exported to ONNX once, by loading each model through an in-process ModelRegistry, so that the
measured runs never pay for an export. Idempotent: a model whose folder, manifest and export are
current is skipped.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".multiplex"
SOURCES = WORK / "sources"
STORE = WORK / "store"
HIDDEN = (32, 64, 96)  # by index: three size classes (about 4, 8 and 12 MB of ONNX each)
EXPORT = "onnx-feature-extraction"


def model_id(index: int) -> str:
    return f"mux-{index:03d}"


def model_ids(count: int) -> list[str]:
    return [model_id(i) for i in range(count)]


def size_class(mid: str) -> int:
    """The hidden size of model ``mid``, which sets its size class."""
    return HIDDEN[int(mid.rsplit("-", 1)[1]) % len(HIDDEN)]


def _write_manifest(index: int, source: Path) -> None:
    folder = STORE / model_id(index)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "id": model_id(index),
        "tasks": ["embedding"],
        "runtime": "onnx-encoder",
        "source": source.as_uri(),
        "settings": {},
    }
    text = json.dumps(manifest, indent=2)
    path = folder / "manifest.json"
    if not path.is_file() or path.read_text() != text:  # unchanged manifests keep their mtime
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def _export_current(index: int, source: Path) -> bool:
    from runtimes.onnx_export import FINGERPRINT, source_fingerprint
    from runtimes.ort_session import OPTIMIZED

    stamp = STORE / model_id(index) / EXPORT / FINGERPRINT
    if not stamp.is_file() or not (stamp.parent / "model.onnx").is_file():
        return False
    if not (stamp.parent / OPTIMIZED).is_file():  # loaded once, ORT keeps its optimized graph
        return False
    return bool(json.loads(stamp.read_text()).get("source_sha256") == source_fingerprint(source))


def onnx_size(mid: str) -> int:
    """What the registry measures for a loaded encoder: its export's files, the loaded graph once."""
    from runtimes.ort_session import OPTIMIZED

    folder = STORE / mid / EXPORT
    skip = "model.onnx" if (folder / OPTIMIZED).is_file() else OPTIMIZED
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != skip)


def prepare(count: int) -> dict[str, int]:
    """Build, register and export ``count`` models; return {model id: size in bytes}."""
    from tests.models import build_tiny_encoder

    started = time.perf_counter()
    stale = []
    for index in range(count):
        hidden = HIDDEN[index % len(HIDDEN)]
        source = build_tiny_encoder(SOURCES / f"bert-h{hidden}-s{index}", hidden=hidden, seed=10_000 + index)
        _write_manifest(index, source)
        if not _export_current(index, source):
            stale.append(model_id(index))
    print(f"prepare: {count} models in {STORE}, {len(stale)} to export or optimize", flush=True)
    if stale:
        asyncio.run(_load_each(stale))
    print(f"prepare: done in {time.perf_counter() - started:.0f} s", flush=True)
    return {mid: onnx_size(mid) for mid in model_ids(count)}


async def _load_each(ids: list[str]) -> None:
    from gateway.models.registry import ModelRegistry
    from gateway.models.store import ModelStore
    from runtimes.base import ThreadSettings

    registry = ModelRegistry(ModelStore(STORE), ThreadSettings(intra_op_threads=1))
    for n, mid in enumerate(ids, 1):
        began = time.perf_counter()
        await registry.load(mid)
        await registry.unload(mid)
        print(f"prepare: exported {mid} ({n}/{len(ids)}) in {time.perf_counter() - began:.1f} s", flush=True)
