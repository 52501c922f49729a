"""A model store for the tuning and adapter tests: the two default models (real MiniLM and
SmolLM2), with SmolLM2's GGUF already converted to the Hugging Face folder its PyTorch twin and
the trainers load. Each test session gets a store of its own (its adapters and jobs start empty,
so versions count from 1, and sessions running side by side do not meet); the converted folder is
made once under .cache/ and hard-linked in.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gateway.models.defaults import DEFAULT_GENERATION_MODEL, write_default_manifests
from gateway.models.store import ModelStore
from runtimes.gguf_convert import CONVERTED, TokenizerFixes, convert_cached
from tests.models import CACHE, pin_fp32_generation

CONVERSIONS = CACHE / "test-tuning-base"


def build_tuning_store(root: Path) -> Path:
    write_default_manifests(root)
    pin_fp32_generation(root)
    generator = ModelStore(root).manifest(DEFAULT_GENERATION_MODEL)
    fixes = TokenizerFixes.from_options(generator.settings)
    converted = convert_cached(generator.source, CONVERSIONS / DEFAULT_GENERATION_MODEL, fixes)
    target = generator.folder / CONVERTED
    if not target.exists():
        shutil.copytree(converted, target, copy_function=os.link)
    return root
