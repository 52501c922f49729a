"""Convert a GGUF checkpoint once into a Hugging Face folder, cached by fingerprint.

transformers reads a ``.gguf`` file by dequantizing every tensor (float32), which takes tens of
seconds; the converted folder (safetensors + tokenizer) reloads in a fraction of a second. It
lives in ``<work_dir>/hf-from-gguf/`` beside a ``fingerprint.json`` naming the file's content
hash, the tokenizer fixes applied and the converter versions; when any of those changes the file
is converted again, into a temporary folder that is renamed into place (never half-written).

Tokenizer fixes: transformers 4.57 takes the GGUF tokenizer's ``eos_token`` from the wrong
field, adds a BOS token even when the file says not to and cleans up spaces before punctuation
on decode (``clean_up_tokenization_spaces``, now off). The converted tokenizer uses
``eos_token`` from the settings when given (else the file's ``tokenizer.ggml.eos_token_id``)
and ``add_bos_token`` from the settings when given (else the file's ``tokenizer.ggml.add_bos_token``).
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtimes.cached_folder import FINGERPRINT, is_current, staged
from runtimes.export_worker import run_in_worker
from runtimes.fingerprint import fingerprint
from runtimes.progress import progress_step

log = logging.getLogger(__name__)

CONVERTED = "hf-from-gguf"
CONVERTER_VERSION = 2  # bump when the conversion itself changes: cached folders are redone


class GGUFConversionError(ValueError):
    """The GGUF file or the settings cannot produce a usable model folder."""


@dataclass(frozen=True)
class TokenizerFixes:
    eos_token: str | None = None  # None: the file's eos token
    add_bos_token: bool | None = None  # None: the file's flag (False when absent)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TokenizerFixes:
        eos = options.get("eos_token")
        bos = options.get("add_bos_token")
        if eos is not None and (not isinstance(eos, str) or not eos):
            raise GGUFConversionError(f"setting 'eos_token' must be a non-empty string, got {eos!r}")
        if bos is not None and not isinstance(bos, bool):
            raise GGUFConversionError(f"setting 'add_bos_token' must be true or false, got {bos!r}")
        return cls(eos_token=eos, add_bos_token=bos)


def _expected(gguf_file: Path, fixes: TokenizerFixes) -> dict[str, Any]:
    return {
        "source_sha256": fingerprint(gguf_file),
        "source_name": gguf_file.name,
        "converter": CONVERTER_VERSION,
        "eos_token": fixes.eos_token,
        "add_bos_token": fixes.add_bos_token,
        "transformers": importlib.metadata.version("transformers"),  # no 300 MB import to check
        "gguf": importlib.metadata.version("gguf"),
    }


def convert_cached(gguf_file: Path, work_dir: Path, fixes: TokenizerFixes) -> Path:
    """Return a Hugging Face folder converted from ``gguf_file`` (converting it when stale)."""
    if not gguf_file.is_file():
        raise GGUFConversionError(f"GGUF file {gguf_file} does not exist")
    target = work_dir / CONVERTED
    expected = _expected(gguf_file, fixes)
    if is_current(target, "config.json", expected):
        return target
    why = "GGUF source or converter changed" if (target / FINGERPRINT).exists() else "first load"
    with staged(target, expected) as staging:
        step = f"dequantizing {gguf_file.name} into a float32 Hugging Face folder"
        with progress_step(log, step, why):
            run_in_worker(_convert, gguf_file, staging, fixes)  # never in the serving process
    return target


def _gguf_metadata(gguf_file: Path) -> dict[str, Any]:
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_file))
    wanted = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.tokens")
    return {key: reader.fields[key].contents() for key in wanted if key in reader.fields}


def _convert(gguf_file: Path, output: Path, fixes: TokenizerFixes) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    metadata = _gguf_metadata(gguf_file)
    vocabulary = metadata.get("tokenizer.ggml.tokens") or []
    if fixes.eos_token is not None and fixes.eos_token not in vocabulary:
        raise GGUFConversionError(f"eos_token {fixes.eos_token!r} is not a token of {gguf_file.name}")
    tokenizer: Any = AutoTokenizer.from_pretrained(folder, gguf_file=name)  # type: ignore[no-untyped-call]
    eos_token = fixes.eos_token
    if eos_token is None and "tokenizer.ggml.eos_token_id" in metadata:
        eos_token = tokenizer.convert_ids_to_tokens(int(metadata["tokenizer.ggml.eos_token_id"]))
    eos_id = None
    if eos_token is not None:
        eos_id = tokenizer.convert_tokens_to_ids(eos_token)
        if (
            eos_id is None
            or eos_id == tokenizer.unk_token_id
            or tokenizer.convert_ids_to_tokens(eos_id) != eos_token
        ):
            raise GGUFConversionError(f"eos_token {eos_token!r} is not a token of {gguf_file.name}")
        tokenizer.eos_token = eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    if eos_id is not None:
        model.config.eos_token_id = eos_id
        model.generation_config.eos_token_id = eos_id
    add_bos = fixes.add_bos_token
    if add_bos is None:
        add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False))
    if hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = add_bos  # the fast Llama tokenizer rebuilds its post-processor
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.clean_up_tokenization_spaces = False  # decode exactly what the model wrote
    model.save_pretrained(str(output))
    tokenizer.save_pretrained(str(output))
