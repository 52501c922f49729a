"""Quantized variants of a cached fp32 ONNX export, chosen per model in the manifest.

    "settings": {"quantization": "int8"}     onnx-encoder: dynamic int8, per channel
    "settings": {"quantization": "int4"}     onnx-causal-lm: 4-bit weight-only MatMuls

A variant is derived from the fp32 export (``runtimes.onnx_export``) in the export worker process
(never in the serving process) and cached beside it in ``<work_dir>/onnx-<task>-<kind>/``, keyed
by a ``fingerprint.json`` naming the fp32 export's own fingerprint (source and exporter), the
quantizer and its settings and the probe's version; when any changes it is made again, in a
temporary folder renamed into place. Making it also measures it against fp32 (the checks are in
``runtimes.quantize_checks``) and writes the figures to ``quantization.json`` beside it:

- int8 encoders: cosine between fp32 and int8 embeddings over a probe set of varied sentences;
  the variant is refused when the mean is under ``quantization_min_cosine`` (default 0.99) or
  the worst sentence under ``quantization_min_cosine_row`` (default 0.95). Measured on MiniLM:
  mean 0.991, worst 0.97 (a two-token "ok"); no dynamic-int8 configuration tried here (presets,
  operators, excluded layers) brought the worst sentence to 0.99, so one threshold for both
  would refuse every int8 MiniLM;
- int4 causal LMs: the greedy answers to fixed questions asked with the model's chat template;
  the variant is refused unless every question fp32 answers with its expected fact is answered
  with it by int4 too (and fp32 must answer at least one, or the probe cannot judge the model).

A refusal is ``QuantizationRefused`` (the model fails to load with the measured figures and the
threshold in its message). The figures are kept with the variant, so a changed threshold is
judged again without quantizing again. Nothing heavy is imported here: the serving process only
reads JSON files on a cached load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import shutil
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from runtimes.cached_folder import FINGERPRINT, is_current, staged
from runtimes.export_worker import run_in_worker
from runtimes.progress import progress_step

log = logging.getLogger(__name__)

REPORT = "quantization.json"
SETTING = "quantization"
MIN_COSINE_SETTING = "quantization_min_cosine"  # the mean over the probe sentences
MIN_ROW_COSINE_SETTING = "quantization_min_cosine_row"  # the worst probe sentence
DEFAULT_MIN_COSINE = 0.99
DEFAULT_MIN_ROW_COSINE = 0.95
NONE = "none"  # fp32, the default
# the variants each runtime offers (besides "none")
CHOICES: dict[str, tuple[str, ...]] = {"onnx-encoder": ("int8",), "onnx-causal-lm": ("int4",)}
# accuracy_level 4 (int8 activations in the 4-bit MatMuls) measured on SmolLM2's export here,
# raw ORT, medians of 7, decode step with 80 past tokens, 1 / 2 intra-op threads: one row 34.6 /
# 25.5 ms (level 0: 40.0 / 32.2, fp32: 61.0 / 74.8), 16 rows 111 / 78 ms (level 0: 150 / 131,
# fp32: 153 / 141); the probe's answers were the same at both levels.
# lm_head (the tied embedding's transpose, 49152 x 576, a fifth of the weights) is quantized too,
# to 8 bits: fp32 it was 113 MB read per decode step; at 4 bits (block 32, symmetric) the probe
# lost a fact ("There are 31 days in a week"), at 8 its answers equal those with an fp32 lm_head.
# The embedding's Gather keeps the fp32 table. bench/generation_step.py measures the variants.
INT4_SETTINGS = {"bits": 4, "block_size": 32, "is_symmetric": True, "accuracy_level": 4, "lm_head_bits": 8}
# bump when the probe sentences, questions or judging change: variants are re-measured
# (2: a numeric fact must be the answer's first number, quantize_checks._holds)
PROBE_VERSION = 2
_KEEP = {FINGERPRINT, REPORT}


class QuantizationRefused(ValueError):
    """The quantized variant failed its check against fp32; the message says the figures."""


def check_choice(runtime: str, value: Any) -> str:
    """The quantization a manifest asks for ("none" when absent); ValueError names the allowed."""
    allowed = (NONE, *CHOICES.get(runtime, ()))
    if value is None:
        return NONE
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"setting {SETTING!r} of runtime {runtime!r} must be one of {', '.join(allowed)}; got {value!r}"
        )
    return value


def check_cosine(name: str, value: Any, default: float) -> float:
    """A cosine threshold of an int8 variant (ValueError unless a number in (0, 1])."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"setting {name!r} must be a number in (0, 1], got {value!r}")
    return float(value)


def int8_config_name() -> str:
    """Optimum's AutoQuantizationConfig preset for this CPU: avx512_vnni, avx2 or arm64."""
    if platform.machine().lower() in {"aarch64", "arm64"}:
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "avx2"
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def int8_variant(
    exported: Path, *, pooling: str, max_tokens: int, min_cosine: float, min_row_cosine: float
) -> tuple[Path, dict[str, Any]]:
    """The int8 variant of an encoder export and its report; QuantizationRefused when its
    embeddings' mean cosine to fp32 is under ``min_cosine`` or the worst under ``min_row_cosine``."""
    from runtimes import quantize_checks

    settings = {
        "method": "optimum ORTQuantizer dynamic",
        "preset": int8_config_name(),
        "per_channel": True,
        # MatMuls only: int8 word embeddings (Gather) cost accuracy on short inputs and no time
        "operators": ["MatMul"],
    }
    variant, report = _cached_variant(
        exported,
        "int8",
        {**settings, "pooling": pooling, "max_tokens": max_tokens},
        {"optimum": metadata.version("optimum")},
        lambda staging: run_in_worker(
            quantize_checks.make_int8, exported, staging, settings, pooling, max_tokens
        ),
    )
    mean, least = float(report["cosine_mean"]), float(report["cosine_min"])
    report = {**report, "min_cosine": min_cosine, "min_cosine_row": min_row_cosine}
    if mean < min_cosine or least < min_row_cosine:
        raise QuantizationRefused(
            f"int8 variant refused: cosine to fp32 over {report['probe_sentences']} probe sentences "
            f"is mean {mean:.5f} (threshold {MIN_COSINE_SETTING} {min_cosine}), worst {least:.5f} "
            f"(threshold {MIN_ROW_COSINE_SETTING} {min_row_cosine})"
        )
    return variant, report


def int4_variant(exported: Path, *, eos_token: str | None) -> tuple[Path, dict[str, Any]]:
    """The int4 variant of a causal-LM export and its report; QuantizationRefused unless its
    greedy answers to the probe questions keep every fact fp32's answers hold."""
    from runtimes import quantize_checks

    variant, report = _cached_variant(
        exported,
        "int4",
        {"method": "onnxruntime MatMulNBitsQuantizer", **INT4_SETTINGS, "eos_token": eos_token},
        {},
        lambda staging: run_in_worker(quantize_checks.make_int4, exported, staging, INT4_SETTINGS, eos_token),
    )
    if not report.get("passed"):
        raise QuantizationRefused(f"int4 variant refused: {report.get('verdict', 'the probe failed')}")
    return variant, report


def _cached_variant(
    exported: Path,
    kind: str,
    settings: dict[str, Any],
    versions: dict[str, str],
    make: Callable[[Path], dict[str, Any]],
) -> tuple[Path, dict[str, Any]]:
    """``<exported>-<kind>/`` made by ``make(staging)`` (which returns the report) when stale."""
    target = exported.with_name(f"{exported.name}-{kind}")
    expected = {
        "base": json.loads((exported / FINGERPRINT).read_text()),
        "quantization": kind,
        "settings": settings,
        "onnxruntime": metadata.version("onnxruntime"),
        "probe_version": PROBE_VERSION,
        **versions,
    }
    if is_current(target, "model.onnx", expected):
        with contextlib.suppress(OSError, ValueError):  # an unreadable report: made again
            return target, json.loads((target / REPORT).read_text())
    why = "fp32 export or quantizer changed" if (target / FINGERPRINT).exists() else "first load"
    with staged(target, expected) as staging:
        with progress_step(log, f"quantizing {exported.parent.name} to {kind}", why):
            report = make(staging)
        (staging / REPORT).write_text(json.dumps(report, indent=2))
    return target, report


def copy_beside(exported: Path, output: Path) -> None:
    """The export's tokenizer and config files into the variant folder (graphs and stamps not)."""
    for path in exported.iterdir():
        if path.is_file() and not path.name.startswith(("model.", ".")) and path.name not in _KEEP:
            shutil.copy2(path, output / path.name)


def variant_report(work_dir: Path, kind: str) -> dict[str, Any] | None:
    """The report of a model's ``kind`` variant (None before one is made): for model info."""
    for report in sorted(work_dir.glob(f"onnx-*-{kind}/{REPORT}")):
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None
