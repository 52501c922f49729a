"""A model store for the tuning and adapter tests: the two default models (real MiniLM and
SmolLM2), with SmolLM2's GGUF already converted to the Hugging Face folder its PyTorch twin and
the trainers load. Models persist under .cache/ between runs; the adapters and jobs folders are
emptied at the start of each session, so versions count from 1.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.defaults import DEFAULT_GENERATION_MODEL, write_default_manifests
from gateway.store import ModelStore
from runtimes.gguf_convert import TokenizerFixes, convert_cached
from tests.models import CACHE

TUNING_STORE = CACHE / "test-tuning-store"


def build_tuning_store(root: Path = TUNING_STORE) -> Path:
    write_default_manifests(root)
    for hidden in (".adapters", ".jobs"):
        shutil.rmtree(root / hidden, ignore_errors=True)
    generator = ModelStore(root).manifest(DEFAULT_GENERATION_MODEL)
    fixes = TokenizerFixes.from_options(generator.settings)
    convert_cached(generator.source, generator.folder, fixes)  # once; cached by fingerprint
    return root
