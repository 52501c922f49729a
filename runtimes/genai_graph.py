"""ONNX Runtime GenAI's model-builder graph of a causal LM, built once and cached by fingerprint.

ONNX Runtime GenAI's builder (``onnxruntime_genai.models.builder``) writes a decoder graph made of
ONNX Runtime's fused CPU operators: GroupQueryAttention with rotary embedding inside,
SkipSimplifiedLayerNormalization and 4-bit MatMulNBits (the embedding a GatherBlockQuantized of
the same table). Measured here with raw ONNX Runtime (SmolLM2-135M, 2 intra-op threads, one decode
step over ~60 past tokens): 7.0 ms for one row and 29 ms for 16, against 13.2 ms for one row of
our own int4 variant of Optimum's export (``runtimes.quantize``) and 25-34 ms of its fp32 graph.
``runtimes.genai_generation`` runs this graph under the gateway's scheduler, on plain ONNX
Runtime: the ``onnxruntime-genai`` package is needed to build it, never to serve it.

The builder imports transformers 5, and the gateway pins transformers 4, so it runs in its own
virtual environment (``make install`` creates ``.venv-builder``; ``TASKGATE_GENAI_BUILDER_PYTHON``
names another interpreter), as a subprocess, on the Hugging Face folder the gateway already has
(a GGUF file's conversion), from the export worker process (``runtimes.export_worker``), like
every export. The graph is then edited (``keep_rows``): lm_head projects only the
positions named by a ``logits_rows`` input, so a prefill of 16 prompts no longer pays the
vocabulary projection of every prompt token.

An int4 graph is checked like ``runtimes.quantize``'s int4 variant: the builder's fp32 graph is
built beside it, both answer the probe questions greedily with the chat template, and the int4
graph is refused (``QuantizationRefused``) unless it keeps every fact fp32 gets right. The
report is kept in ``quantization.json`` beside the graph. The default precision, ``auto``, serves
the first graph of ``AUTO_ORDER`` that passes (``graph_chosen``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runtimes.cached_folder import FINGERPRINT, staged
from runtimes.export_worker import run_in_worker
from runtimes.fingerprint import fingerprint
from runtimes.progress import progress_step

log = logging.getLogger(__name__)

RUNTIME = "onnx-genai-causal-lm"  # the manifest's name of runtimes.genai_generation's engine
BUILDER_ENV = "TASKGATE_GENAI_BUILDER_PYTHON"
BUILDER_VENV = ".venv-builder"  # beside the repository's .venv, made by make install
BUILDER_PACKAGE = "onnxruntime-genai"
AUTO = "auto"
PRECISIONS = (AUTO, "int4", "int4-head4", "fp32")
PRECISION_SETTING = "precision"  # the manifest setting choosing one of PRECISIONS
DEFAULT_PRECISION = AUTO
# "auto": the first of these whose graph passes its probe (fastest first; fp32 is never refused).
# int4-head4's decode step is the fastest that has kept the probe's facts on SmolLM2-135M (an AVX2
# machine, raw ORT, 2 threads, one row: 10.6 ms against int4's 12.0; the builder's all-4-bit
# default, 9.7 ms, loses the week question with or without k-quant or an fp32 embedding); where
# a CPU's rounding makes it lose a fact, int4 (the 8-bit head) is tried next.
AUTO_ORDER = ("int4-head4", "int4", "fp32")
LOGITS_ROWS = "logits_rows"  # int64 [K]: flat row-major indices into the [batch, positions] grid
EDITS = 1  # bump when keep_rows changes: cached graphs are edited again
PROBE_VERSION = 2  # quantize.PROBE_VERSION's reasons: the probe (quantize_checks) changed
# The builder's extra options per precision. int4: MatMuls at 4 bits (block 32, symmetric,
# accuracy level 4: int8 activations), with lm_head ("last_matmul") and the quantization-sensitive
# layers llama.cpp promotes in its Q4_K_M mix ("mixed_layers": qkv / v / down projections of the
# first and last eighth and every third layer between) at 8. Measured on SmolLM2-135M (raw ORT,
# 1 thread, decode over 60 past tokens): 7.0 ms one row, 33 ms 16 rows, with or without the
# 8-bit layers; answers without a system prompt, all-4-bit body: "A week has 5 days.", "2+2 is an
# interesting combination of numbers"; with the mix: "A week is approximately 7 days ...", "2 + 2 =
# 4". With the builder's default 4-bit lm_head the probe itself failed ("There are 31 days in a
# week"), as our own int4 variant's did (runtimes.quantize). A tied embedding is untied
# (shared_embeddings=false): the builder's shared 4-bit table cannot feed an 8-bit lm_head, so
# the embedding is an fp32 Gather.
BUILDER_OPTIONS: dict[str, tuple[str, ...]] = {
    "int4": (
        "hf_token=false",
        "matmul_mixed_precision=last_matmul:int8,mixed_layers:int8",
        "shared_embeddings=false",
    ),
    # int4-head4 (auto's first choice, measured faster): int4's mix with lm_head at 4 bits too. On
    # SmolLM2-135M (in-process, 2 threads, alternating runs, an AVX2 machine): a decode step 13.04
    # -> 11.70 ms at one row and 74.2 -> 66.7 ms at 16; alone, lm_head's MatMul took 1.83 ms a row
    # at 8 bits and 0.88 at 4. Its answers kept the probe's facts there but part from fp32's sooner
    # ("A week is equivalent to 7 days and 1 day."), and a 4-bit head has failed the probe before
    # (the builder's default graph, on another machine), so it is probed like int4, which auto
    # serves where it is refused.
    "int4-head4": (
        "hf_token=false",
        "matmul_mixed_precision=mixed_layers:int8",
        "shared_embeddings=false",
    ),
    "fp32": ("hf_token=false",),
}
REPORT = "quantization.json"
_HEAD_OUTPUT = "logits"
_BUILD_TIMEOUT_S = 1800


class BuilderMissing(RuntimeError):
    """The model builder's interpreter is not there; the message says how to install it."""


def check_precision(value: Any) -> str:
    """A manifest's precision for onnx-genai-causal-lm; ValueError names the allowed ones."""
    if value not in PRECISIONS:
        raise ValueError(
            f"setting {PRECISION_SETTING!r} of runtime {RUNTIME!r} must be one of {', '.join(PRECISIONS)}; "
            f"got {value!r}"
        )
    return str(value)


def graph_chosen(
    folder: Path, work_dir: Path, precision: str, eos_token: str | None
) -> tuple[Path, dict[str, Any], str]:
    """``graph_cached`` for a concrete precision; for ``auto``, the first of AUTO_ORDER whose graph
    passes its probe (each refusal is logged and kept in its folder's report, so a later load
    goes straight to the graph chosen). Returns (graph folder, report, the precision served)."""
    from runtimes.quantize import QuantizationRefused

    if check_precision(precision) != AUTO:
        return (*graph_cached(folder, work_dir, precision, eos_token), precision)
    for candidate in AUTO_ORDER:
        try:
            graph, report = graph_cached(folder, work_dir, candidate, eos_token)
        except QuantizationRefused as refused:
            log.warning("precision auto: %s; trying the next precision", refused)
            continue
        return graph, report, candidate
    raise AssertionError(f"{AUTO_ORDER[-1]} is never refused")  # pragma: no cover


def chosen_precision(work_dir: Path, precision: str) -> str | None:
    """The precision a model's ``precision`` setting serves, from the reports built so far: itself
    unless ``auto``, then the first of AUTO_ORDER not refused (None before anything is built)."""
    if precision != AUTO:
        return precision
    for candidate in AUTO_ORDER:
        report = graph_report(work_dir, candidate)
        if report is None:
            return None
        if report.get("passed"):
            return candidate
    return None


def builder_precision(precision: str) -> str:
    """The model builder's ``-p`` for one of our concrete precisions (int4-head4 is int4 with other
    options, BUILDER_OPTIONS)."""
    return "int4" if is_quantized(precision) else precision


def is_quantized(precision: str) -> bool:
    """Whether a precision's graph is 4-bit (int4, int4-head4): probed against fp32 when built."""
    return precision.startswith("int4")


def builder_python() -> Path:
    """The interpreter with onnxruntime-genai's builder (read when a model loads, not at import)."""
    configured = os.environ.get(BUILDER_ENV)
    if configured:
        return Path(configured)
    # <repo>/.venv/bin/python -> <repo>/.venv-builder/bin/python; else beside this source tree
    for root in (Path(sys.prefix).parent, Path(__file__).resolve().parents[1]):
        candidate = root / BUILDER_VENV / "bin" / "python"
        if candidate.is_file():
            return candidate
    return Path(__file__).resolve().parents[1] / BUILDER_VENV / "bin" / "python"


def _builder_version(python: Path) -> str:
    if not python.is_file():
        raise BuilderMissing(
            f"ONNX Runtime GenAI's model builder is not installed ({python} is missing): run "
            f"`make install` (it makes {BUILDER_VENV}) or set {BUILDER_ENV} to a Python with "
            f"{BUILDER_PACKAGE} and transformers 5"
        )
    # the operator's interpreter (TASKGATE_GENAI_BUILDER_PYTHON or .venv-builder), our arguments
    done = subprocess.run(  # noqa: S603
        [str(python), "-c", f"from importlib.metadata import version; print(version({BUILDER_PACKAGE!r}))"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise BuilderMissing(f"{python} cannot import {BUILDER_PACKAGE}: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


def graph_cached(
    folder: Path, work_dir: Path, precision: str, eos_token: str | None
) -> tuple[Path, dict[str, Any]]:
    """``<work_dir>/genai-<precision>/`` holding the edited ``model.onnx`` of ``folder`` (a Hugging
    Face folder), and its report; QuantizationRefused when an int4 graph loses a probe fact."""
    from importlib import metadata

    from runtimes.quantize import QuantizationRefused

    if check_precision(precision) == AUTO:
        raise ValueError(f"precision {AUTO!r} names no graph of its own: graph_chosen resolves it")
    target = work_dir / f"genai-{precision}"
    python = builder_python()
    expected = {
        "source_sha256": fingerprint(folder),
        "precision": precision,
        "eos_token": eos_token,
        "builder_options": list(BUILDER_OPTIONS.get(precision, ())),
        "graph_edits": EDITS,
        "probe_version": PROBE_VERSION,
        "onnxruntime": metadata.version("onnxruntime"),
    }
    # A built folder is current when its stamp holds all of the above; the builder's version is
    # stamped too but not asked for here (asking the builder costs a second on every load).
    report: dict[str, Any] | None = None
    stamp = _read_json(target / FINGERPRINT)
    if stamp is not None and {k: v for k, v in stamp.items() if k != "builder"} == expected:
        report = _read_json(target / REPORT) if (target / "model.onnx").is_file() else None
    if report is None:
        expected["builder"] = _builder_version(python)
        why = "source or builder changed" if (target / FINGERPRINT).exists() else "first load"
        with staged(target, expected) as staging:
            with progress_step(log, f"building the ORT GenAI {precision} graph of {work_dir.name}", why):
                # in the export worker, never in the serving process: the probe runs two ORT
                # sessions and a tokenizer for seconds (runtimes.export_worker)
                report = run_in_worker(_build, python, folder, staging, precision, eos_token)
            (staging / REPORT).write_text(json.dumps(report, indent=2))
    if is_quantized(precision) and not report.get("passed"):
        raise QuantizationRefused(
            f"ORT GenAI {precision} graph refused: {report.get('verdict', 'the probe failed')}"
        )
    return target, report


def graph_report(work_dir: Path, precision: str) -> dict[str, Any] | None:
    """The probe report of a model's built graph (None before it is built): for model info."""
    return _read_json(work_dir / f"genai-{precision}" / REPORT)


def _read_json(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
    return None


def _build(python: Path, folder: Path, output: Path, precision: str, eos_token: str | None) -> dict[str, Any]:
    started = time.perf_counter()
    _run_builder(python, folder, output, precision)
    edit_graph(output / "model.onnx")
    build_s = round(time.perf_counter() - started, 2)
    if not is_quantized(precision):
        return {"precision": precision, "passed": True, "build_seconds": build_s}
    reference = output / ".fp32"
    try:
        _run_builder(python, folder, reference, "fp32")
        edit_graph(reference / "model.onnx")
        from runtimes.genai_checks import probe_report

        report = probe_report(folder, reference / "model.onnx", output / "model.onnx", eos_token)
    finally:
        shutil.rmtree(reference, ignore_errors=True)
    return {**report, "precision": precision, "build_seconds": build_s}


def _run_builder(python: Path, folder: Path, output: Path, precision: str) -> None:
    output.mkdir(parents=True, exist_ok=True)
    cache = output / ".builder-cache"
    command = [
        str(python), "-m", "onnxruntime_genai.models.builder", "-i", str(folder), "-o", str(output),
        "-p", builder_precision(precision), "-e", "cpu", "-c", str(cache),
        "--extra_options", *BUILDER_OPTIONS[precision],
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        done = subprocess.run(  # noqa: S603 (our arguments; paths of the store, not of a request)
            command, capture_output=True, text=True, check=False, env=env, timeout=_BUILD_TIMEOUT_S
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if done.returncode != 0 or not (output / "model.onnx").is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(
            f"ONNX Runtime GenAI's model builder failed ({done.returncode}): {' | '.join(tail)}"
        )
    # the builder's own tokenizer and config copies are not used: the gateway reads the source folder's
    for extra in output.iterdir():
        if extra.is_file() and not extra.name.startswith("model.onnx"):
            extra.unlink()


def cache_geometry(folder: Path) -> tuple[int, int]:
    """(key/value heads, head size) of a Hugging Face folder's model: the builder's cache inputs
    are ``[batch, kv_heads, past, head_size]`` with a symbolic head size."""
    config = json.loads((folder / "config.json").read_text())
    heads = int(config["num_attention_heads"])
    head_dim = config.get("head_dim") or int(config["hidden_size"]) // heads
    return int(config.get("num_key_value_heads") or heads), int(head_dim)


def edit_graph(path: Path) -> None:
    """Apply ``keep_rows`` to the graph at ``path`` in place (its weights stay where they are)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if keep_rows(model):
        onnx.save(model, str(path))


def keep_rows(model: Any) -> bool:
    """Give lm_head only the positions a ``logits_rows`` input names: the final hidden state
    ``[batch, positions, hidden]`` is flattened to ``[batch * positions, hidden]`` and gathered, so
    ``logits`` becomes ``[K, 1, vocab]`` for K indices. False when the input is already there."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if any(i.name == LOGITS_ROWS for i in graph.input):
        return False
    heads = [n for n in graph.node if list(n.output) == [_HEAD_OUTPUT]]
    if len(heads) != 1 or heads[0].op_type not in {"MatMul", "MatMulNBits"}:
        raise ValueError(
            f"expected one MatMul / MatMulNBits producing {_HEAD_OUTPUT!r} in the builder's graph"
        )
    head = heads[0]
    flat, picked, axes, kept = (f"/lm_head/rows_{part}" for part in ("flat", "picked", "axes", "kept"))
    hidden = next((o for o in graph.output if o.name == _HEAD_OUTPUT), None)
    graph.initializer.append(numpy_helper.from_array(np.asarray([1], np.int64), axes))
    nodes = [
        helper.make_node("Flatten", [head.input[0]], [flat], name="/lm_head/RowsFlat", axis=2),
        helper.make_node("Gather", [flat, LOGITS_ROWS], [picked], name="/lm_head/RowsPick", axis=0),
        helper.make_node("Unsqueeze", [picked, axes], [kept], name="/lm_head/RowsKeep"),
    ]
    head.input[0] = kept
    index = list(graph.node).index(head)
    for offset, node in enumerate(nodes):
        graph.node.insert(index + offset, node)
    graph.input.append(helper.make_tensor_value_info(LOGITS_ROWS, TensorProto.INT64, ["kept_rows"]))
    if hidden is not None and len(hidden.type.tensor_type.shape.dim) == 3:
        dims = hidden.type.tensor_type.shape.dim
        dims[0].dim_param, dims[1].dim_value = "kept_rows", 1
    return True
